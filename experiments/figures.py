"""The report's Figures 6 and 7: the best VAE beside the best GAN, on their best and worst images.

The two models are the best cells (lowest test report loss) of Tables 1 and 2, which must be run
first (experiments/README.md); the images are the test images that both paint best (Figure 6)
and worst (Figure 7), ranked by their summed report loss.
"""

from collections.abc import Callable
import dataclasses
from pathlib import Path

import jax
import ml_collections
import numpy as np

from ce_jax import checkpoints, evaluate, images, sharding, steps
from experiments import render, report, runner

FAMILIES = {'vae': 1, 'gan': 2}  # model -> the table whose best cell stands for it


@dataclasses.dataclass(frozen=True)
class Painter:
  """The restored generator of a table's best cell."""

  cell: report.Cell
  config: ml_collections.ConfigDict
  variables: dict  # replicated over the mesh
  eval_step: Callable  # steps.make_eval_step(config)
  step: int


def figures_dir(root, protocol: str) -> Path:
  return Path(root) / 'figures' / protocol


def best_cell(protocol: str, root, table: int) -> tuple[report.Cell, str]:
  """The finished cell of `table` with the lowest test report loss, and its workdir."""
  summary = runner.read_json(runner.table_dir(root, table, protocol) / 'results.json')
  done = {n: r for n, r in (summary or {}).get('cells', {}).items() if r['finished']}
  if not done:
    raise ValueError(
        f'Figures 6 and 7 need Table {table} first: python -m experiments.sweep '
        f'--table={table} --protocol={protocol}'
    )
  name = min(done, key=lambda n: done[n]['test']['report_loss'])
  return report.TABLES[table].cell(name), done[name]['workdir']


def restore_painter(cell: report.Cell, config, workdir, mesh) -> Painter:
  saved, variables, step = checkpoints.load_generator(workdir)
  checkpoints.check_compatible(saved, config, workdir)
  return Painter(
      cell,
      config,
      jax.device_put(variables, sharding.replicated(mesh)),
      steps.make_eval_step(config),
      step,
  )


def _paint(batch, painters: dict, first_index: int) -> dict:
  """The valid images of `batch`, each family's painting and report loss, and their sum."""
  valid = np.asarray(batch['valid']) > 0
  found = {
      'original': images.to_uint8(batch['image'])[valid],
      'index': np.arange(first_index, first_index + valid.sum()),
  }
  for kind, painter in painters.items():
    filled, values = painter.eval_step(painter.variables, batch)
    found[kind] = images.to_uint8(filled)[valid]
    found[f'{kind}_loss'] = np.asarray(values['report_loss'], np.float64)[valid]
  found['score'] = sum(found[f'{kind}_loss'] for kind in painters)
  return found


def _keep_extremes(kept: dict | None, found: dict, k: int) -> dict:
  """The k lowest and k highest scores of `kept` and `found` together (all, if fewer)."""
  merged = found if kept is None else {n: np.concatenate([kept[n], found[n]]) for n in found}
  order = np.argsort(merged['score'], kind='stable')
  picked = order if len(order) <= 2 * k else np.concatenate([order[:k], order[-k:]])
  return {n: v[picked] for n, v in merged.items()}


def rank_test_images(config, painters: dict, mesh) -> tuple[dict, int]:
  """The `config.grid_images` best and worst test images as every painter paints them (best
  first), and how many test images were ranked."""
  kept, seen = None, 0
  for batch in evaluate.eval_batches(config, mesh)[0]:
    found = _paint(batch, painters, seen)
    seen += len(found['index'])
    kept = _keep_extremes(kept, found, config.grid_images)
  order = np.argsort(kept['score'], kind='stable')
  return {n: v[order] for n, v in kept.items()}, seen


def run_figures(
    protocol: str,
    root,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    overrides: dict | None = None,
) -> dict:
  """Writes figure6.png, figure7.png and figures.json (what they show) under figures_dir."""
  best = {kind: best_cell(protocol, root, table) for kind, table in FAMILIES.items()}
  mesh = sharding.data_mesh()
  painters = {}
  for kind, (cell, workdir) in best.items():
    config = report.cell_config(
        protocol, FAMILIES[kind], cell, dataset=dataset, data_dir=data_dir, overrides=overrides
    )
    painters[kind] = restore_painter(cell, config, workdir, mesh)
  ranked, seen = rank_test_images(painters['vae'].config, painters, mesh)
  ranks = np.arange(len(ranked['score']))  # best first
  n_best = min(painters['vae'].config.grid_images, len(ranks))
  chosen = {'figure6': ranks[:n_best], 'figure7': ranks[::-1][:n_best]}
  out = figures_dir(root, protocol)
  labels = {kind: p.cell.label() for kind, p in painters.items()}
  info = {'protocol': protocol, 'test_images': seen, 'ranked_by': 'VAE + GAN report loss'}
  info |= {kind: {'cell': p.cell.name, 'step': p.step} for kind, p in painters.items()}
  if jax.process_index() == 0:
    for stem, idx in chosen.items():
      columns = {'original': ranked['original'][idx]}
      columns |= {labels[kind]: ranked[kind][idx] for kind in painters}
      render.save_grid(out / f'{stem}.png', columns)
      info[stem] = [
          {
              'test_index': int(ranked['index'][i]),
              **{f'{kind}_loss': float(ranked[f'{kind}_loss'][i]) for kind in painters},
          }
          for i in idx
      ]
    runner.write_json(out / 'figures.json', info)
  runner.log(
      'Figures 6 and 7 (%s vs %s over %d test images) in %s',
      labels['vae'],
      labels['gan'],
      seen,
      out,
  )
  return info
