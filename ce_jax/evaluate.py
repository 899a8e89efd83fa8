"""Scores a trained generator on a dataset split, beside the mean-fill and Telea baselines.

  python -m ce_jax.evaluate --workdir=runs/demo [--step=latest|best|N] [--dataset=...] [--split=test]
  python -m ce_jax.evaluate --workdir=pretrained --config.eval_batch_size=16 --max_examples=64

Restores the generator alone from the orbax checkpoint, paints the hole of every image of the
split (the same masks every time: they come from a fixed key), and writes
`WORKDIR/eval/step_N_SPLIT.json` and a PNG grid (original | masked | model | Telea).
"""

from pathlib import Path
import sys

from absl import app, flags, logging
import jax

from ce_jax import baselines as baselines_lib
from ce_jax import checkpoints, cli, input_pipeline, metrics, platform, sharding, steps
from ce_jax import visualize

EVAL_MASK_SEED = 1234  # masks of evaluation batch i come from fold_in(PRNGKey(this + seed), i)


def eval_batches(config, mesh, split: str = 'test'):
  """A split's device batches as every evaluation sees them: fixed order, centre crops, and the
  masks of a fixed key, so that scores and grids of different models compare image for image."""
  dataset, skipped = input_pipeline.create_dataset(
      config, split, seed=config.seed, shuffle=False, repeat=False, augment=False
  )
  key = jax.random.PRNGKey(EVAL_MASK_SEED + config.seed)
  return input_pipeline.device_batches(dataset, config, mesh, key), skipped


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
) -> dict:
  """Mean per-image metrics of the model (and of each named baseline) over a split.

  Returns {'model': {metric: value, 'images': n}, 'mean_fill': {...}, ..., 'skipped': k}.
  """
  mesh = mesh or sharding.data_mesh()
  gen_variables = jax.device_put(gen_variables, sharding.replicated(mesh))  # beside the batches
  eval_step = eval_step or steps.make_eval_step(config)
  batches, skipped = eval_batches(config, mesh, split)
  score = jax.jit(metrics.per_image)
  averages = {name: metrics.Average() for name in ('model', *baselines)}
  for i, batch in enumerate(batches):
    filled, values = eval_step(gen_variables, batch)
    values, valid = sharding.to_host((values, batch['valid']))
    averages['model'].update(values, valid)
    painted = {'model': filled}
    if baselines or (i == 0 and grid_path):  # on the host, with every host's rows
      batch, painted = sharding.to_host((batch, painted))
    for name in baselines:
      painted[name] = baselines_lib.BASELINES[name](batch)
      averages[name].update(score(painted[name], batch), valid)
    if i == 0 and grid_path and jax.process_index() == 0:
      visualize.save_grid(
          grid_path,
          {'original': batch['image'], 'masked': batch['masked'], **painted},
          rows=config.grid_images,
      )
    if 0 < max_examples <= averages['model'].count:
      break
  batches.close()
  return {name: avg.result() for name, avg in averages.items()} | {'skipped': skipped.count}


def format_table(results: dict) -> str:
  """Markdown table: one row per painter (model, baselines), one column per metric."""
  rows = [k for k, v in results.items() if isinstance(v, dict)]
  head = '| | ' + ' | '.join(metrics.NAMES) + ' | images |'
  lines = [head, '|' + '---|' * (len(metrics.NAMES) + 2)]
  for r in rows:
    vals = ' | '.join(f'{results[r][m]:.4g}' for m in metrics.NAMES)
    lines.append(f'| {r} | {vals} | {results[r]["images"]} |')
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
  config = cli.apply_overrides(config, cli.overrides())
  input_pipeline.validate(config)
  if FLAGS.split == 'test':
    input_pipeline.num_examples(config, 'test')  # one line now if the split is empty
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
      grid_path=out / f'step_{step}_{FLAGS.split}.png',
  )
  results |= {'step': step, 'split': FLAGS.split, 'dataset': config.dataset}
  if jax.process_index() > 0:  # the first host writes and reports
    return results
  checkpoints.write_json(out / f'step_{step}_{FLAGS.split}.json', results)
  print(f'{config.model}/{config.encoder} step {step}, {FLAGS.split} split of {config.dataset}:')
  print(format_table(results))
  if results['skipped']:
    print(f'skipped {results["skipped"]} unreadable images')
  print(f'wrote {out}/step_{step}_{FLAGS.split}.json and .png')
  return results


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
