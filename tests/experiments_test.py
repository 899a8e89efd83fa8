"""The experiments: each table's sweep end to end on the tiny protocol.

Every run is a subprocess on the CPU with XLA's backend optimisation off and one shared
compilation cache: the tiny networks then compile about 2.5x faster, and compile time is nearly
all of a tiny run. Each table runs a few of its cells for a few steps (all three tables run).
"""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from conftest import REPO
from experiments import render, report, runner

STEPS = 3
CELLS = {
    1: ['vae_alexnet_4000'],
    2: ['gan_alexnet_4000'],
    3: ['gan_alexnet_500', 'gan_alexnet_4000'],
}


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp('jax_cache')


def environment(cache) -> dict:
  return dict(
      os.environ,
      TF_CPP_MIN_LOG_LEVEL='3',
      PYTHONUNBUFFERED='1',
      JAX_PLATFORMS='cpu',
      XLA_FLAGS='--xla_backend_optimization_level=0',
      JAX_COMPILATION_CACHE_DIR=str(cache),
  )


def run_sweep(root, cache, *args):
  start = time.perf_counter()
  r = subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments.sweep',
          '--protocol=tiny',
          '--dataset=samples',
          f'--root={root}',
          f'--compilation_cache={cache}',
          f'--config.num_steps={STEPS}',
          *args,
      ],
      cwd=REPO,
      env=environment(cache),
      capture_output=True,
      text=True,
      timeout=400,
  )
  assert r.returncode == 0, r.stderr[-4000:]
  return r, time.perf_counter() - start


@pytest.fixture(scope='module')
def tables(tmp_path_factory, cache):
  """ROOT after `--table=N --protocol=tiny` for each table, and each command's seconds."""
  root = tmp_path_factory.mktemp('experiments')
  seconds = {}
  for table, cells in CELLS.items():
    _, seconds[table] = run_sweep(root, cache, f'--table={table}', f'--cells={",".join(cells)}')
  return root, seconds


def opens(path) -> tuple[int, int]:
  with Image.open(path) as img:
    img.load()
    return img.size


@pytest.mark.parametrize('table', sorted(CELLS))
def test_table_has_a_row_per_cell_and_the_baselines(tables, table):
  root, _ = tables
  out = root / f'table{table}' / 'tiny'
  md = (out / f'table{table}.md').read_text()
  lines = md.splitlines()
  for cell in report.TABLES[table].cells:
    rows = [l for l in lines if l.startswith(f'| {cell.label()} | {cell.bottleneck} |')]
    assert len(rows) == 1, (cell.name, md)
    assert ('not run' in rows[0]) == (cell.name not in CELLS[table]), rows[0]
  for label in ('mean fill', 'Telea'):
    row = next(l for l in lines if l.startswith(f'| {label} (baseline) |'))
    assert float(row.split('|')[5]) > 0, row  # its test report loss
  for name, (_, test_loss) in report.REPORT[table].items():
    assert f'{test_loss:.6g}' in md, name  # the report's numbers beside ours

  results = json.loads((out / 'results.json').read_text())
  assert results['protocol'] == 'tiny' and results['config']['num_steps'] == STEPS
  for name in CELLS[table]:
    r = results['cells'][name]
    assert r['finished'] and r['step'] == STEPS
    for split in ('train', 'test'):
      assert r[split]['images'] > 0 and math.isfinite(r[split]['report_loss'])
  base = results['baselines']
  assert base['telea']['report_loss'] < base['mean_fill']['report_loss']  # Telea is the floor

  assert opens(out / f'table{table}.png') == (render.Chart.W, render.Chart.H)
  figures = ['grid.png'] + (
      [f'{report.TABLES[table].figure[0]}.png'] if report.TABLES[table].figure else []
  )
  for name in figures:
    width, height = opens(out / name)
    assert width > 0 and height > 0, name


def test_grids_show_the_same_test_images_for_every_model(tables):
  root, _ = tables
  rows = [
      np.load(root / f'table{t}' / 'tiny' / CELLS[t][0] / 'eval' / f'step_{STEPS}_test_rows.npz')
      for t in CELLS
  ]
  for r in rows[1:]:
    np.testing.assert_array_equal(r['original'], rows[0]['original'])
    np.testing.assert_array_equal(r['masked'], rows[0]['masked'])
    np.testing.assert_array_equal(r['telea'], rows[0]['telea'])


def test_rerun_reuses_the_finished_runs(tables, cache):
  root, seconds = tables
  workdir = root / 'table1' / 'tiny' / 'vae_alexnet_4000'
  checkpoints_before = sorted(p.name for p in (workdir / 'checkpoints').iterdir())
  jsonl_before = (workdir / 'metrics.jsonl').read_text()
  r, rerun = run_sweep(root, cache, '--table=1', '--cells=vae_alexnet_4000')
  assert 'finished at step 3; reusing it' in r.stderr, r.stderr[-2000:]
  assert 'Training vae' not in r.stderr
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == checkpoints_before
  assert (workdir / 'metrics.jsonl').read_text() == jsonl_before  # not one more step
  cell = json.loads((root / 'table1' / 'tiny' / 'results.json').read_text())['cells'][
      'vae_alexnet_4000'
  ]
  assert cell['step'] == STEPS and not cell['evaluated_now']  # the kept evaluation
  assert rerun < seconds[1], (rerun, seconds[1])


def test_figures_6_and_7(tables, cache):
  root, _ = tables
  run_sweep(root, cache, '--figures')
  out = root / 'figures' / 'tiny'
  info = json.loads((out / 'figures.json').read_text())
  assert info['vae']['cell'] == 'vae_alexnet_4000' and info['gan']['cell'] == 'gan_alexnet_4000'
  best = [r['vae_loss'] + r['gan_loss'] for r in info['figure6']]
  worst = [r['vae_loss'] + r['gan_loss'] for r in info['figure7']]
  assert len(best) == len(worst) == 4 and max(best) <= min(worst)
  for name in ('figure6.png', 'figure7.png'):
    opens(out / name)


def test_protocols():
  cell = report.Cell('vae', 'vgg', 2000)
  paper = report.cell_config('paper', 1, cell)
  assert (paper.image_size, paper.hole_size, paper.mask.overlap, paper.batch_size) == (
      256,
      64,
      0,
      32,
  )
  assert (paper.dataset, paper.train_examples, paper.test_examples) == (
      'places365_small',
      5000,
      2000,
  )
  assert paper.num_epochs == 100 and report.cell_config('paper', 3, cell).num_epochs == 30
  quick = report.cell_config('quick', 1, cell)
  assert (quick.image_size, quick.hole_size, quick.dataset, quick.num_steps) == (
      128,
      64,
      'samples',
      3000,
  )
  assert report.cell_config('quick', 3, cell, dataset='folder:/x').dataset == 'folder:/x'
  tiny = report.cell_config('tiny', 2, cell, overrides={'dtype': 'bfloat16', 'optim.b1': 0.9})
  assert (tiny.model, tiny.encoder, tiny.bottleneck, tiny.image_size) == ('vae', 'vgg', 2000, 32)
  assert tiny.dtype == 'bfloat16' and tiny.optim.b1 == 0.9
  with pytest.raises(ValueError, match='protocol'):
    report.cell_config('huge', 1, cell)
  with pytest.raises(ValueError, match='no cell'):
    runner.run_table(1, 'tiny', '/nonexistent', cells=['vae_vgg_500'])
  assert [len(t.cells) for t in report.TABLES.values()] == [3, 4, 12]


def test_overrides_set_a_field_of_every_cell():
  cell = report.Cell('gan', 'pathak', 4000)
  config = report.cell_config('tiny', 1, cell, overrides={'num_steps': 7, 'optim.b1': 0.9})
  assert (config.num_steps, config.optim.b1) == (7, 0.9)
  with pytest.raises(ValueError, match="Unknown config field 'optim.bb1'"):
    report.cell_config('tiny', 1, cell, overrides={'optim.bb1': 0.9})


def test_charts_draw_missing_values(tmp_path):
  render.bar_chart(
      tmp_path / 'bar.png', 'bars', ['a', 'b'], {'x': [1.0, None], 'y': [2.0, 3.0]}, {'telea': 0.5}
  )
  render.line_chart(
      tmp_path / 'line.png',
      'lines',
      ['500', '2000', '4000'],
      {'m': [3.0, None, 1.0], 'n': [None, None, None]},
      {},
  )
  assert opens(tmp_path / 'bar.png') == opens(tmp_path / 'line.png')
