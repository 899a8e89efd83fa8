"""Reproduces the report's Tables 1-3 and Figures 4-7: one resumable run per table cell.

Every cell (model, encoder, bottleneck) trains in its own workdir,
ROOT/tableN/PROTOCOL/MODEL_ENCODER_BOTTLENECK, through `ce_jax.train.train_and_evaluate`, so that
running the same command again resumes the cells that did not finish and skips the ones that did
straight to evaluation (whose results are kept in WORKDIR/eval/, so it is not redone either). The
final checkpoint of each cell is scored on the train and the test split, the test split beside the
mean-fill and Telea baselines on the same images and masks, and ROOT/tableN/PROTOCOL/ receives

  tableN.md      the table: train / test report loss, test L1 %, L2 %, PSNR, SSIM for each cell,
                 the baselines' rows, and the report's own numbers beside ours
  results.json   everything in the table, and where each run lives
  tableN.png     a plot: test report loss per cell (Table 3: loss against bottleneck size)
  grid.png       the first test images: original | masked | every cell | mean fill | Telea
  figure4.png    Table 1, the report's Figure 4: original | VAE VGG | VAE ResNet | VAE AlexNet
  figure5.png    Table 2, the report's Figure 5: original | GAN AlexNet | GAN ResNet

and `--figures`, once Tables 1 and 2 are done, writes ROOT/figures/PROTOCOL/figure6.png and
figure7.png (Figures 6 and 7: the best VAE beside the best GAN on the test images that both paint
best, and worst). Every grid shows the same test images with the same masks for every model.

Tables (the report's cells, plus GAN-VGG and GAN-Pathak, which it leaves out of Table 2):
  1  VAE with alexnet, vgg, resnet; bottleneck 4000.
  2  GAN with alexnet, resnet (the report's), vgg and pathak (the original release); 4000.
  3  bottleneck 500 / 2000 / 4000 for VAE-VGG, VAE-ResNet, GAN-AlexNet, GAN-ResNet.

Protocols (`--protocol`):

  paper  The report's: configs.get('paper'): Places365 (TFDS places365_small) at 256x256, centre
         64x64 hole, no overlap, batch 32, 5000 train / 2000 test images (the first ones of the
         train / validation splits), 100 epochs (15,600 steps), 30 epochs (4,680 steps) for
         Table 3. Prepare Places365 once (about 30 GB):
           python -c "import tensorflow_datasets as tfds; \
             tfds.builder('places365_small', data_dir='DIR').download_and_prepare()"
           python -m experiments.sweep --table=1 --protocol=paper --data_dir=DIR
           python -m experiments.sweep --table=2 --protocol=paper --data_dir=DIR
           python -m experiments.sweep --table=3 --protocol=paper --data_dir=DIR
           python -m experiments.sweep --figures --protocol=paper --data_dir=DIR
         Expected wall-clock (an estimate from the networks' FLOPs, not yet measured: no run of
         this protocol has been made on an accelerator): 10-20 min per cell of Tables 1-2 on one
         H100 or a TPU v2-8 (plus 10 periodic evaluations of 2000 images), 3-6 min per cell of
         Table 3; Table 1 about 45 min, Table 2 about 1 h, Table 3 about 1 h.
         Expected result: numbers to set beside the report's (REPORT below, and in each
         tableN.md); not yet reproduced here, so how close they come is the open question.

  quick  The paper's protocol at 128x128 (centre 64x64 hole, overlap 0, batch 32) on a folder of
         photos: 3000 steps for Tables 1-2 and 900 for Table 3 (the report's 100:30 epochs).
         128/64 keeps the hole, and so the report loss's units (a sum over 64x64x3 values), the
         same as the report's, for a quarter of the 256-px compute, and it is the original
         release's geometry; 3000 steps of batch 32 (about 100,000 images seen, a fifth of the
         paper protocol's 500,000) fit in minutes on one GPU. The default data are the 51 bundled
         photos (about 43 train / 8 test: a smoke test of the protocol); give it a folder of a
         few hundred photos or more (e.g. the 207 of the project's shared/data/photos) for
         numbers that mean something:
           python -m experiments.sweep --table=1 --protocol=quick [--dataset=folder:PATH]
           python -m experiments.sweep --table=2 --protocol=quick [--dataset=folder:PATH]
           python -m experiments.sweep --table=3 --protocol=quick [--dataset=folder:PATH]
           python -m experiments.sweep --figures --protocol=quick [--dataset=folder:PATH]
         Expected wall-clock (estimated, not yet measured): 2-4 min per cell on one GPU (about
         1 min of it compiling), so about 10 min for Table 1, 15 for Table 2, 20 for Table 3.

  tiny   configs.get('tiny') (32x32 images, 16x16 hole, 8-channel first stage, batch 16) with the
         report's bottleneck sizes, 100 steps (Table 3: 30) on the bundled photos: a smoke test
         that runs every cell end to end on a CPU; the numbers say that the code runs, not how
         the networks compare.
           python -m experiments.sweep --table=1 --protocol=tiny     # 2 min on a 2-core CPU
           python -m experiments.sweep --table=2 --protocol=tiny     # 2.6 min
           python -m experiments.sweep --table=3 --protocol=tiny     # 4.3 min
           python -m experiments.sweep --figures --protocol=tiny     # 7 s
         (measured: experiments/RESULTS.md; most of it is XLA compiling each network, and a
         second run of a table takes seconds.) Expected result: every cell trains and is scored;
         after 100 steps the models roughly match the mean fill and lose to Telea.

Other flags: `--cells=vae_vgg_4000,...` runs only those cells of the table (the table still lists
all, the others as 'not run' unless an earlier invocation finished them); `--set=field=value`
overrides any config field of every cell (e.g. `--set=dtype=bfloat16`, `--set=num_steps=5`);
`--reevaluate` scores finished cells again; compiled programs are cached in ROOT/jax_cache.
Training uses every device of the host (data parallel); see experiments/colab_tpu.ipynb.
"""

import contextlib
import dataclasses
import json
import math
from pathlib import Path
import sys
import time

from absl import app, flags, logging
import jax
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ce_jax import baselines as baselines_lib
from ce_jax import checkpoints, cli, configs, evaluate, input_pipeline, metrics, sharding, steps
from ce_jax import train, visualize

PROTOCOLS = ('paper', 'quick', 'tiny')
BASELINES = ('mean_fill', 'telea')
BASELINE_LABELS = {'mean_fill': 'mean fill', 'telea': 'Telea'}
ENCODER_LABELS = {'alexnet': 'AlexNet', 'vgg': 'VGG', 'resnet': 'ResNet', 'pathak': 'Pathak'}
# Fields that decide what an evaluation sees: a kept result is reused only when they are the same.
EVAL_FIELDS = ('dataset', 'data_dir', 'train_examples', 'test_examples', 'folder_test_fraction',
               'image_size', 'hole_size', 'mask', 'fill', 'eval_batch_size', 'seed', 'dtype',
               'conv_impl')


@dataclasses.dataclass(frozen=True)
class Cell:
  model: str
  encoder: str
  bottleneck: int

  @property
  def name(self) -> str:
    return f'{self.model}_{self.encoder}_{self.bottleneck}'

  def label(self, bottleneck: bool = False) -> str:
    text = f'{self.model.upper()} {ENCODER_LABELS[self.encoder]}'
    return f'{text} {self.bottleneck}' if bottleneck else text


@dataclasses.dataclass(frozen=True)
class Table:
  title: str
  cells: tuple[Cell, ...]
  figure: tuple[str, tuple[str, ...]] | None  # (file stem, cell names in the report's order)
  by_bottleneck: bool = False  # Table 3: rows are (model, encoder), columns bottleneck sizes


def _cells(models_encoders, bottlenecks=(4000,)):
  return tuple(Cell(m, e, b) for m, e in models_encoders for b in bottlenecks)


TABLES = {
    1: Table('Encoder architectures in the VAE (bottleneck 4000)',
             _cells([('vae', 'alexnet'), ('vae', 'vgg'), ('vae', 'resnet')]),
             ('figure4', ('vae_vgg_4000', 'vae_resnet_4000', 'vae_alexnet_4000'))),
    2: Table('Encoder architectures in the GAN (bottleneck 4000)',
             _cells([('gan', 'alexnet'), ('gan', 'resnet'), ('gan', 'vgg'), ('gan', 'pathak')]),
             ('figure5', ('gan_alexnet_4000', 'gan_resnet_4000'))),
    3: Table('Bottleneck size (500 / 2000 / 4000)',
             _cells([('vae', 'vgg'), ('vae', 'resnet'), ('gan', 'alexnet'), ('gan', 'resnet')],
                    (500, 2000, 4000)),
             None, by_bottleneck=True),
}

# The report's numbers (context-encoders-report, Tables 1-3): cell -> (train loss, test loss).
# Table 3 does not say which split it shows; its 4000 column for GAN ResNet is Table 2's test
# loss, so it is set beside our test loss. (Its other 4000 entries differ from Tables 1-2.)
REPORT = {
    1: {'vae_alexnet_4000': (1894.29, 1882.63), 'vae_vgg_4000': (1747.96, 1784.43),
        'vae_resnet_4000': (1725.11, 1769.02)},
    2: {'gan_alexnet_4000': (1798.83, 1768.69), 'gan_resnet_4000': (3030.98, 3038.22)},
    3: {'vae_vgg_500': (None, 1817.82), 'vae_vgg_2000': (None, 1784.43),
        'vae_vgg_4000': (None, 1808.84), 'vae_resnet_500': (None, 1819.92),
        'vae_resnet_2000': (None, 1813.5658), 'vae_resnet_4000': (None, 1818.61),
        'gan_alexnet_500': (None, 2101.0), 'gan_alexnet_2000': (None, 2237.55),
        'gan_alexnet_4000': (None, 1813.56), 'gan_resnet_500': (None, 5470.18),
        'gan_resnet_2000': (None, 4704.27), 'gan_resnet_4000': (None, 3038.22)},
}


class Interrupted(Exception):
  """A cell's training stopped before its last step (SIGTERM / Ctrl-C): run again to resume."""


log = train.log


# ------------------------------------------------------------------------------------------------
# Configurations.


def cell_config(protocol: str, table: int, cell: Cell, *, dataset: str | None = None,
                data_dir: str | None = None, overrides=()):
  """The ConfigDict that trains `cell` of `table` under `protocol` (see the module docstring)."""
  short = table == 3  # the report trains Table 3 for 30 epochs instead of 100
  if protocol == 'paper':
    c = configs.get('paper')
    c.num_epochs = 30 if short else 100
  elif protocol == 'quick':
    c = configs.get('paper')
    c.image_size = 128
    c.dataset = 'samples'
    c.train_examples = c.test_examples = -1
    c.num_epochs, c.num_steps = -1, 900 if short else 3000
    c.log_every, c.eval_every, c.checkpoint_every = 100, 1000, 500
  elif protocol == 'tiny':
    c = configs.get('tiny')
    c.num_steps = 30 if short else 100
    c.eval_every, c.checkpoint_every = 1000, 1000  # both also happen at the last step
  else:
    raise ValueError(f'Unknown protocol {protocol!r}; choose one of: {", ".join(PROTOCOLS)}.')
  c.model, c.encoder, c.bottleneck = cell.model, cell.encoder, cell.bottleneck
  if dataset:
    c.dataset = dataset
  if data_dir is not None:
    c.data_dir = data_dir
  for item in overrides:
    if '=' not in item:
      raise ValueError(f'--set={item!r} must look like field.path=value.')
    path, value = item.split('=', 1)
    cli.set_field(c, path.strip(), value.strip())
  return c


def eval_key(config) -> dict:
  """What an evaluation depends on, JSON-normalised, to tell whether a kept result still holds."""
  c = config.to_dict()
  return json.loads(json.dumps({k: c[k] for k in EVAL_FIELDS}))


def final_step(config) -> int:
  return train.total_steps(config, input_pipeline.num_examples(config, 'train'))


@contextlib.contextmanager
def _quiet():
  """Hides orbax's warnings that a read-only checkpoint manager is read-only."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def latest_step(workdir) -> int | None:
  if not (Path(workdir) / 'checkpoints').is_dir():
    return None
  with _quiet():
    mngr = checkpoints.manager(workdir, read_only=True)
    step = mngr.latest_step()
    mngr.close()
  return step


def load_generator(workdir, step=None):
  with _quiet():
    return checkpoints.load_generator(workdir, step)


def _read_json(path) -> dict | None:
  path = Path(path)
  return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path, obj) -> None:
  if jax.process_index() == 0:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    checkpoints.write_json(path, obj)


# ------------------------------------------------------------------------------------------------
# Test batches: the images and masks of `ce_jax.evaluate`, in its order.


def first_test_batch(config, mesh) -> dict:
  batches, _ = evaluate.eval_batches(config, mesh)
  batch = next(batches)
  batches.close()
  return batch


def _valid_rows(batch, rows: int) -> int:
  return int(min(rows, np.asarray(batch['valid']).sum()))


def _from_uint8(x, min_size: int = 128) -> np.ndarray:
  """uint8 rows -> [-1, 1] for `visualize.save_grid`, small images enlarged (nearest) so that
  the column labels fit above them."""
  x = np.asarray(x, np.float32) / 127.5 - 1.0
  factor = max(1, math.ceil(min_size / x.shape[1]))
  return x.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else x


# ------------------------------------------------------------------------------------------------
# One cell: train (or resume, or skip), then score the final checkpoint.


def run_cell(cell: Cell, config, workdir, mesh, *, reevaluate: bool = False) -> dict:
  """Trains `cell` in `workdir` up to its final step, scores it, returns its results."""
  workdir = Path(workdir)
  n_steps = final_step(config)
  done = latest_step(workdir)
  timing_path = workdir / 'sweep_timing.json'
  timing = _read_json(timing_path) or {'train_seconds': 0.0}
  if done is not None and done >= n_steps:
    log('%s: finished at step %d; reusing it', cell.name, done)
  else:
    log('%s: training %s', cell.name, f'from step {done}' if done else 'from scratch')
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    timing['train_seconds'] += time.perf_counter() - start
    _write_json(timing_path, timing)
    done = latest_step(workdir)
    if done is None or done < n_steps:
      raise Interrupted(f'{cell.name} stopped at step {done} of {n_steps}; run the same command '
                        f'again to resume it.')
  result = evaluate_cell(config, workdir, done, mesh, reevaluate=reevaluate)
  return result | {'train_seconds': timing['train_seconds'], 'final_step': n_steps}


def kept_result(config, workdir) -> dict | None:
  """The kept evaluation of a finished cell (for a cell this invocation does not run), or None."""
  step = latest_step(workdir)
  if step is None or step < final_step(config):
    return None
  result = _kept_evaluation(config, Path(workdir), step)
  if result is None:
    return None
  timing = _read_json(Path(workdir) / 'sweep_timing.json') or {'train_seconds': 0.0}
  return result | {'train_seconds': timing['train_seconds'], 'final_step': step}


def _eval_paths(workdir: Path, step: int) -> dict:
  out = workdir / 'eval'
  return {'train': out / f'step_{step}_train.json', 'test': out / f'step_{step}_test.json',
          'rows': out / f'step_{step}_test_rows.npz'}


def _kept_evaluation(config, workdir: Path, step: int) -> dict | None:
  paths = _eval_paths(workdir, step)
  if not all(p.is_file() for p in paths.values()):
    return None
  kept = {split: _read_json(paths[split]) for split in ('train', 'test')}
  if any(r.get('sweep_key') != eval_key(config) for r in kept.values()):
    return None
  return {'step': step, 'workdir': str(workdir), 'rows': str(paths['rows']),
          'eval_seconds': kept['test'].get('sweep_seconds', 0.0), 'evaluated_now': False,
          'train': _metrics_only(kept['train']['model']),
          'test': _metrics_only(kept['test']['model']),
          'baselines': {b: _metrics_only(kept['test'][b]) for b in BASELINES}}


def _metrics_only(values: dict) -> dict:
  return {k: values[k] for k in (*metrics.NAMES, 'images')}


def evaluate_cell(config, workdir: Path, step: int, mesh, *, reevaluate: bool = False) -> dict:
  """Scores the checkpoint `step` of `workdir` on both splits (kept in WORKDIR/eval/)."""
  if not reevaluate and (kept := _kept_evaluation(config, workdir, step)) is not None:
    return kept
  saved, gen_variables, step = load_generator(workdir, step)
  checkpoints.check_compatible(saved, config, str(workdir))
  # load_generator restores onto one device; the batches are split over every device of the mesh.
  gen_variables = jax.device_put(gen_variables, sharding.replicated(mesh))
  eval_step = steps.make_eval_step(config)
  paths = _eval_paths(workdir, step)
  start = time.perf_counter()
  results = {}
  for split in ('test', 'train'):
    results[split] = evaluate.evaluate(
        gen_variables, config, mesh=mesh, split=split, eval_step=eval_step,
        baselines=BASELINES if split == 'test' else (),
        grid_path=paths[split].with_suffix('.png'))
  seconds = time.perf_counter() - start
  # The first test images as painted by this model and by the baselines, for the tables' grids.
  batch = first_test_batch(config, mesh)
  rows = _valid_rows(batch, config.grid_images)
  filled, _ = eval_step(gen_variables, batch)  # = steps.make_predict(config), already compiled
  arrays = {'original': batch['image'], 'masked': batch['masked'], 'model': filled}
  arrays |= {b: baselines_lib.BASELINES[b](batch) for b in BASELINES}
  if jax.process_index() == 0:
    np.savez_compressed(paths['rows'], **{k: visualize.to_uint8(v)[:rows] for k, v in
                                          arrays.items()})
  for split, res in results.items():
    _write_json(paths[split], res | {'step': step, 'split': split, 'dataset': config.dataset,
                                     'sweep_key': eval_key(config), 'sweep_seconds': seconds})
  log('%s step %d: train report loss %.4g, test report loss %.4g (mean fill %.4g, Telea %.4g)',
      workdir.name, step, results['train']['model']['report_loss'],
      results['test']['model']['report_loss'], results['test']['mean_fill']['report_loss'],
      results['test']['telea']['report_loss'])
  return {'step': step, 'workdir': str(workdir), 'rows': str(paths['rows']),
          'eval_seconds': seconds, 'evaluated_now': True,
          'train': _metrics_only(results['train']['model']),
          'test': _metrics_only(results['test']['model']),
          'baselines': {b: _metrics_only(results['test'][b]) for b in BASELINES}}


# ------------------------------------------------------------------------------------------------
# A table.


def table_dir(root, table: int, protocol: str) -> Path:
  return Path(root) / f'table{table}' / protocol


def run_table(table: int, protocol: str, root, *, dataset: str | None = None,
              data_dir: str | None = None, cells=(), overrides=(), reevaluate: bool = False
              ) -> dict:
  """Trains and scores the cells of `table` (all, or the named `cells`), writes its files."""
  if table not in TABLES:
    raise ValueError(f'Unknown table {table}; choose one of {sorted(TABLES)}.')
  spec = TABLES[table]
  names = [c.name for c in spec.cells]
  unknown = sorted(set(cells) - set(names))
  if unknown:
    raise ValueError(f'Table {table} has no cell {", ".join(unknown)}; its cells: '
                     f'{", ".join(names)}.')
  out = table_dir(root, table, protocol)
  mesh = sharding.data_mesh()
  start = time.perf_counter()
  results, first_config = {}, None
  for cell in spec.cells:
    config = cell_config(protocol, table, cell, dataset=dataset, data_dir=data_dir,
                         overrides=overrides)
    if first_config is None:
      first_config = config
    workdir = out / cell.name
    if not cells or cell.name in cells:
      results[cell.name] = run_cell(cell, config, workdir, mesh, reevaluate=reevaluate)
    else:
      results[cell.name] = kept_result(config, workdir)
  summary = {
      'table': table, 'title': spec.title, 'protocol': protocol,
      'config': _protocol_summary(first_config),
      'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      'wall_seconds': time.perf_counter() - start,
      'cells': {}, 'baselines': None,
  }
  for cell in spec.cells:
    res = results[cell.name]
    report = dict(zip(('train', 'test'), REPORT[table].get(cell.name, (None, None))))
    summary['cells'][cell.name] = {'model': cell.model, 'encoder': cell.encoder,
                                   'bottleneck': cell.bottleneck, 'report': report,
                                   'finished': res is not None, **(res or {})}
    if res is not None and summary['baselines'] is None:
      summary['baselines'] = res['baselines']
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    (out / f'table{table}.md').write_text(markdown_table(summary))
    plot_table(summary, out / f'table{table}.png')
    save_table_grids(summary, out)
    _write_json(out / 'results.json', summary)
  return summary


def _protocol_summary(config) -> dict:
  keys = ('image_size', 'hole_size', 'batch_size', 'num_epochs', 'num_steps', 'dataset',
          'train_examples', 'test_examples', 'dtype')
  return {k: config[k] for k in keys} | {'overlap': config.mask.overlap}


def _fmt(x, digits: int = 4) -> str:
  if x is None:
    return '—'
  return f'{x:.{digits}g}' if abs(x) < 10 ** digits else f'{x:.0f}'


def _seconds(s) -> str:
  return '—' if s is None else (f'{s:.0f} s' if s < 120 else f'{s / 60:.1f} min')


def markdown_table(summary: dict) -> str:
  """Our numbers per cell, the baselines' on the same test images, and the report's."""
  t = summary['table']
  spec = TABLES[t]
  c = summary['config']
  images = next((r['test']['images'], r['train']['images']) for r in summary['cells'].values()
                if r['finished']) if summary['baselines'] else (None, None)
  lines = [
      f'# Table {t}: {summary["title"]} ({summary["protocol"]} protocol)', '',
      f'{c["image_size"]}x{c["image_size"]} images, centre {c["hole_size"]}x{c["hole_size"]} '
      f'hole (overlap {c["overlap"]}), batch {c["batch_size"]}, '
      + (f'{c["num_steps"]} steps' if c['num_steps'] > 0 else f'{c["num_epochs"]} epochs')
      + f', dataset `{c["dataset"]}` ({images[1]} train / {images[0]} test images scored), '
      f'{summary["devices"]}. Training the cells took {_seconds(_total(summary, "train_seconds"))}'
      f', scoring them {_seconds(_total(summary, "eval_seconds"))}; this invocation '
      f'{_seconds(summary["wall_seconds"])}.', '',
      'Report loss: per image, the sum of squared errors over the hole\'s pixels in [-1, 1] '
      '(3 channels), averaged over the images, as in the report\'s tables. L1 % / L2 %: mean '
      'absolute / squared error over the hole in [0, 1], x100; PSNR over the hole; SSIM over the '
      'whole image. "train" is the final checkpoint scored on the training images (centre crop, '
      'no flip, inference mode).', '',
      '| model | bottleneck | steps | train report loss | test report loss | test L1 % | '
      'test L2 % | test PSNR dB | test SSIM | report: train loss | report: test loss | '
      'train time |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for cell in spec.cells:
    r = summary['cells'][cell.name]
    rep = (_fmt(r['report']['train'], 6), _fmt(r['report']['test'], 6))
    if not r['finished']:
      lines.append(_row(cell.label(), cell.bottleneck, 'not run', *['—'] * 6, *rep, '—'))
      continue
    te = r['test']
    lines.append(_row(cell.label(), cell.bottleneck, r['step'], _fmt(r['train']['report_loss']),
                      *_test_metrics(te), *rep, _seconds(r['train_seconds'])))
  for b in BASELINES:
    v = (summary['baselines'] or {}).get(b)
    scores = _test_metrics(v) if v else ['—'] * 5
    label = f'{BASELINE_LABELS[b]} (baseline)'
    lines.append(_row(label, '—', '—', '—', *scores, '—', '—', '—'))
  if spec.by_bottleneck:
    lines += ['', 'Test report loss by bottleneck size, ours / the report\'s:', '',
              '| model | ' + ' | '.join(str(b) for b in _bottlenecks(spec)) + ' |',
              '|---|' + '---:|' * len(_bottlenecks(spec))]
    for label, row in _rows_by_model(spec):
      vals = []
      for cell in row:
        r = summary['cells'][cell.name]
        ours = _fmt(r['test']['report_loss']) if r['finished'] else 'not run'
        vals.append(f'{ours} / {_fmt(r["report"]["test"], 6)}')
      lines.append(f'| {label} | ' + ' | '.join(vals) + ' |')
  if summary['protocol'] != 'paper':
    lines += ['', 'The report\'s numbers come from its own protocol (Places365, 256/64, '
              '5000 images, 100 epochs); only the paper protocol is comparable with them.']
  return '\n'.join(lines) + '\n'


def _row(*values) -> str:
  return '| ' + ' | '.join(str(v) for v in values) + ' |'


def _test_metrics(v: dict) -> list[str]:
  """Test report loss, L1 %, L2 %, PSNR, SSIM, formatted."""
  return [_fmt(v['report_loss']), _fmt(v['l1']), _fmt(v['l2']), _fmt(v['psnr']),
          _fmt(v['ssim'], 3)]


def _total(summary: dict, key: str) -> float:
  return sum(r.get(key, 0.0) for r in summary['cells'].values() if r['finished'])


def _bottlenecks(spec: Table) -> list[int]:
  return sorted({c.bottleneck for c in spec.cells})


def _rows_by_model(spec: Table) -> list[tuple[str, list[Cell]]]:
  rows = {}
  for cell in spec.cells:
    rows.setdefault(cell.label(), []).append(cell)
  return list(rows.items())


# ------------------------------------------------------------------------------------------------
# Grids (the report's figures).


def _load_rows(summary: dict) -> dict:
  """{cell name: its npz of first test images} for the finished cells."""
  return {name: np.load(r['rows']) for name, r in summary['cells'].items() if r['finished']}


def save_table_grids(summary: dict, out: Path) -> list[Path]:
  """grid.png (every cell and the baselines) and the report's figure for this table."""
  rows = _load_rows(summary)
  if not rows:
    return []
  spec = TABLES[summary['table']]
  first = next(iter(rows.values()))
  labels = {c.name: c.label(spec.by_bottleneck) for c in spec.cells}
  columns = {'original': first['original'], 'masked': first['masked']}
  columns |= {labels[n]: r['model'] for n, r in rows.items()}
  columns |= {BASELINE_LABELS[b]: first[b] for b in BASELINES}
  written = [visualize.save_grid(out / 'grid.png', {k: _from_uint8(v) for k, v in columns.items()})]
  if spec.figure is not None:
    stem, names = spec.figure
    columns = {'original': first['original']}
    columns |= {labels[n]: rows[n]['model'] for n in names if n in rows}
    written.append(visualize.save_grid(out / f'{stem}.png',
                                       {k: _from_uint8(v) for k, v in columns.items()}))
  return written


def run_figures(protocol: str, root, *, dataset: str | None = None, data_dir: str | None = None,
                overrides=()) -> dict:
  """Figures 6 and 7: the best VAE (Table 1) beside the best GAN (Table 2) on the test images
  that both paint best (Figure 6) and worst (Figure 7), ranked by their summed report loss."""
  best = {}
  for table, kind in ((1, 'vae'), (2, 'gan')):
    summary = _read_json(table_dir(root, table, protocol) / 'results.json')
    done = {n: r for n, r in (summary or {}).get('cells', {}).items() if r['finished']}
    if not done:
      raise ValueError(f'Figures 6 and 7 need Table {table} first: python -m experiments.sweep '
                       f'--table={table} --protocol={protocol}')
    name = min(done, key=lambda n: done[n]['test']['report_loss'])
    cell = next(c for c in TABLES[table].cells if c.name == name)
    best[kind] = (cell, cell_config(protocol, table, cell, dataset=dataset, data_dir=data_dir,
                                    overrides=overrides), done[name]['workdir'])
  mesh = sharding.data_mesh()
  painters = {}
  for kind, (cell, config, workdir) in best.items():
    saved, gen_variables, step = load_generator(workdir)
    checkpoints.check_compatible(saved, config, workdir)
    painters[kind] = (jax.device_put(gen_variables, sharding.replicated(mesh)),
                      steps.make_eval_step(config), step)
  config = best['vae'][1]
  k = config.grid_images
  keep = None  # the k best and k worst images so far: {'score', 'index', images and losses}
  seen = 0
  for batch in evaluate.eval_batches(config, mesh)[0]:
    valid = np.asarray(batch['valid']) > 0
    found = {'original': visualize.to_uint8(batch['image'])[valid],
             'index': np.arange(seen, seen + valid.sum())}
    for kind, (gen_variables, eval_step, _) in painters.items():
      filled, values = eval_step(gen_variables, batch)
      found[kind] = visualize.to_uint8(filled)[valid]
      found[f'{kind}_loss'] = np.asarray(values['report_loss'], np.float64)[valid]
    found['score'] = found['vae_loss'] + found['gan_loss']
    seen += int(valid.sum())
    merged = found if keep is None else {n: np.concatenate([keep[n], found[n]]) for n in found}
    order = np.argsort(merged['score'], kind='stable')
    picked = order if len(order) <= 2 * k else np.concatenate([order[:k], order[-k:]])
    keep = {n: v[picked] for n, v in merged.items()}
  order = np.argsort(keep['score'], kind='stable')
  n_best = min(k, len(order))
  chosen = {'figure6': order[:n_best], 'figure7': order[::-1][:n_best]}
  out = Path(root) / 'figures' / protocol
  labels = {kind: cell.label() for kind, (cell, _, _) in best.items()}
  info = {'protocol': protocol, 'test_images': seen, 'ranked_by': 'VAE + GAN report loss',
          'vae': {'cell': best['vae'][0].name, 'step': painters['vae'][2]},
          'gan': {'cell': best['gan'][0].name, 'step': painters['gan'][2]}}
  if jax.process_index() == 0:
    for stem, idx in chosen.items():
      columns = {'original': keep['original'][idx], labels['vae']: keep['vae'][idx],
                 labels['gan']: keep['gan'][idx]}
      visualize.save_grid(out / f'{stem}.png', {n: _from_uint8(v) for n, v in columns.items()})
      info[stem] = [{'test_index': int(keep['index'][i]), 'vae_loss': float(keep['vae_loss'][i]),
                     'gan_loss': float(keep['gan_loss'][i])} for i in idx]
    _write_json(out / 'figures.json', info)
  log('Figures 6 and 7 (%s vs %s over %d test images) in %s', labels['vae'], labels['gan'], seen,
      out)
  return info


# ------------------------------------------------------------------------------------------------
# Plots, drawn with Pillow (the project does not depend on matplotlib).

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75))
BASELINE_COLOURS = {'mean_fill': (120, 120, 120), 'telea': (188, 189, 34)}


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
    return ImageFont.load_default()


def _nice_ticks(top: float, n: int = 5) -> list[float]:
  """Round tick values from 0 to at least `top`."""
  top = top if top > 0 else 1.0
  raw = top / n
  mag = 10 ** math.floor(math.log10(raw))
  step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
  return [i * step for i in range(int(math.ceil(top / step)) + 1)]


class _Chart:
  """A white canvas with a y axis from 0, a title, and a legend on the right."""

  W, H, LEFT, RIGHT, TOP, BOTTOM = 960, 540, 80, 210, 64, 70

  def __init__(self, title: str, ylabel: str, top: float):
    self.image = Image.new('RGB', (self.W, self.H), 'white')
    self.draw = ImageDraw.Draw(self.image)
    self.font, self.small = _font(15), _font(12)
    self.ticks = _nice_ticks(top * 1.05)
    self.ymax = self.ticks[-1]
    self.x0, self.x1 = self.LEFT, self.W - self.RIGHT
    self.y0, self.y1 = self.H - self.BOTTOM, self.TOP
    self.draw.text((self.LEFT, 12), title, fill='black', font=self.font)
    for t in self.ticks:
      y = self.y(t)
      self.draw.line([(self.x0, y), (self.x1, y)], fill=(228, 228, 228))
      self.draw.text((self.x0 - 8, y), _fmt(t), fill='black', font=self.small, anchor='rm')
    self.draw.line([(self.x0, self.y0), (self.x1, self.y0)], fill='black')
    self.draw.line([(self.x0, self.y0), (self.x0, self.y1)], fill='black')
    self.draw.text((12, self.TOP - 24), ylabel, fill='black', font=self.small)
    self.legend = []

  def y(self, value: float) -> float:
    return self.y0 - (self.y0 - self.y1) * value / self.ymax

  def hline(self, value: float, colour, label: str) -> None:
    y = self.y(value)
    for x in range(self.x0, self.x1, 12):
      self.draw.line([(x, y), (min(x + 7, self.x1), y)], fill=colour, width=2)
    self.legend.append((colour, label, 'dash'))

  def xlabel(self, x: float, text: str) -> None:
    for i, part in enumerate(text.split('\n')):
      self.draw.text((x, self.y0 + 8 + 15 * i), part, fill='black', font=self.small, anchor='mt')

  def save(self, path) -> Path:
    y = self.TOP
    for colour, label, kind in self.legend:
      x = self.x1 + 20
      if kind == 'dash':
        self.draw.line([(x, y + 7), (x + 8, y + 7)], fill=colour, width=2)
        self.draw.line([(x + 12, y + 7), (x + 20, y + 7)], fill=colour, width=2)
      else:
        self.draw.rectangle([x, y, x + 20, y + 14], fill=colour)
      self.draw.text((x + 28, y), label, fill='black', font=self.small)
      y += 22
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    self.image.save(path)
    return path


def bar_chart(path, title: str, groups: list[str], series: dict, hlines: dict) -> Path:
  """Bars of each series (name -> value per group, None = missing) and dashed reference lines."""
  values = [v for vs in series.values() for v in vs if v is not None] + list(hlines.values())
  chart = _Chart(title, 'report loss (lower is better)', max(values, default=1.0))
  width = (chart.x1 - chart.x0) / max(len(groups), 1)
  bar = 0.7 * width / max(len(series), 1)
  for s, (name, vals) in enumerate(series.items()):
    colour = PALETTE[s % len(PALETTE)]
    chart.legend.append((colour, name, 'box'))
    for g, v in enumerate(vals):
      x = chart.x0 + g * width + 0.15 * width + s * bar
      if v is None:
        chart.draw.text((x + bar / 2, chart.y0 - 4), 'not run', fill='gray', font=chart.small,
                        anchor='mb')
        continue
      chart.draw.rectangle([x, chart.y(v), x + bar - 2, chart.y0], fill=colour)
      chart.draw.text((x + bar / 2, chart.y(v) - 3), _fmt(v), fill='black', font=chart.small,
                      anchor='mb')
  for g, label in enumerate(groups):
    chart.xlabel(chart.x0 + (g + 0.5) * width, label)
  for name, v in hlines.items():
    chart.hline(v, BASELINE_COLOURS.get(name, (0, 0, 0)), f'{BASELINE_LABELS.get(name, name)} '
                f'(test) {_fmt(v)}')
  return chart.save(path)


def line_chart(path, title: str, xs: list[str], series: dict, hlines: dict) -> Path:
  """A line with dots per series (name -> value per x, None = missing), dashed reference lines."""
  values = [v for vs in series.values() for v in vs if v is not None] + list(hlines.values())
  chart = _Chart(title, 'test report loss (lower is better)', max(values, default=1.0))
  step = (chart.x1 - chart.x0) / max(len(xs), 1)
  xpos = [chart.x0 + (i + 0.5) * step for i in range(len(xs))]
  for i, label in enumerate(xs):
    chart.xlabel(xpos[i], label)
  for s, (name, vals) in enumerate(series.items()):
    colour = PALETTE[s % len(PALETTE)]
    chart.legend.append((colour, name, 'box'))
    points = [(x, chart.y(v)) for x, v in zip(xpos, vals) if v is not None]
    if len(points) > 1:
      chart.draw.line(points, fill=colour, width=3)
    for x, y in points:
      chart.draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
  for name, v in hlines.items():
    chart.hline(v, BASELINE_COLOURS.get(name, (0, 0, 0)), f'{BASELINE_LABELS.get(name, name)} '
                f'{_fmt(v)}')
  return chart.save(path)


def plot_table(summary: dict, path) -> Path:
  """Tables 1-2: train and test report loss per cell; Table 3: test loss against bottleneck."""
  spec = TABLES[summary['table']]
  cells = summary['cells']
  hlines = {b: v['report_loss'] for b, v in (summary['baselines'] or {}).items()}
  title = f'Table {summary["table"]}: {spec.title}, {summary["protocol"]} protocol'

  def loss(name, split):
    return cells[name][split]['report_loss'] if cells[name]['finished'] else None

  if spec.by_bottleneck:
    series = {label: [loss(c.name, 'test') for c in row] for label, row in _rows_by_model(spec)}
    return line_chart(path, title, [f'bottleneck {b}' for b in _bottlenecks(spec)], series,
                      hlines)
  series = {f'{split} report loss': [loss(c.name, split) for c in spec.cells]
            for split in ('train', 'test')}
  return bar_chart(path, title, [c.label() for c in spec.cells], series, hlines)


# ------------------------------------------------------------------------------------------------
# Command line.

FLAGS = flags.FLAGS


def define_flags():
  """Flags of this command (defined only when it runs, as ce_jax's commands do)."""
  flags.DEFINE_enum('table', None, ['1', '2', '3'], 'Which of the report\'s tables to reproduce.')
  flags.DEFINE_enum('protocol', 'paper', PROTOCOLS, 'paper | quick | tiny (see the docstring).')
  flags.DEFINE_string('root', 'runs/experiments', 'Where the runs and tables go.')
  flags.DEFINE_string('dataset', None, 'samples | places365_small | folder:PATH (default: the '
                      'protocol\'s: places365_small for paper, samples otherwise).')
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir for places365_small.')
  flags.DEFINE_list('cells', [], 'Run only these cells of the table (e.g. vae_vgg_4000).')
  flags.DEFINE_multi_string('set', [], 'Override a config field of every cell: --set=a.b=value.')
  flags.DEFINE_bool('figures', False, 'Write Figures 6 and 7 (needs Tables 1 and 2 done).')
  flags.DEFINE_bool('reevaluate', False, 'Score finished cells again instead of reusing results.')
  flags.DEFINE_string('compilation_cache', None, 'JAX persistent compilation cache '
                      '(default ROOT/jax_cache; empty: none).')


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax and clu are chatty at INFO
  if len(argv) > 1:
    sys.exit(f'sweep: unexpected arguments {argv[1:]}; flags look like --name=value.')
  if FLAGS.table is None and not FLAGS.figures:
    sys.exit('sweep: give --table=1|2|3 and/or --figures.')
  cache = FLAGS.compilation_cache
  cache = str(Path(FLAGS.root) / 'jax_cache') if cache is None else cache
  if cache:
    jax.config.update('jax_compilation_cache_dir', str(Path(cache).absolute()))
  kwargs = dict(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, overrides=FLAGS.set)
  try:
    if FLAGS.table is not None:
      table = int(FLAGS.table)
      summary = run_table(table, FLAGS.protocol, FLAGS.root, cells=FLAGS.cells,
                          reevaluate=FLAGS.reevaluate, **kwargs)
      out = table_dir(FLAGS.root, table, FLAGS.protocol)
      print(markdown_table(summary))
      print(f'wrote {out}/table{table}.md, results.json, table{table}.png and grids '
            f'in {_seconds(summary["wall_seconds"])}')
    if FLAGS.figures:
      run_figures(FLAGS.protocol, FLAGS.root, **kwargs)
      print(f'wrote {Path(FLAGS.root) / "figures" / FLAGS.protocol}/figure6.png, figure7.png')
  except Interrupted as e:
    sys.exit(f'sweep: {e}')
  except (ValueError, FloatingPointError) as e:
    sys.exit(f'sweep: {e}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
