"""The report's study with seeds: one result file per (table, cell, seed), tables rebuilt from them.

  python -m experiments.sweep --protocol=cpu --table=all --root=/work/runs/study  # train + score
  python -m experiments.sweep --protocol=cpu --rebuild       # RESULTS.md only

Every run (a cell of a table with one seed) trains in its own resumable workdir,
ROOT/PROTOCOL/tableN/CELL-seedK, is scored once, and leaves two small files in the repository:
RESULTS_DIR/PROTOCOL/tableN/CELL-seedK.json (its scores on every test set beside the classical
fills, its train score, its wall-clock) and CELL-seedK.png (the first held-out images: masked |
model | harmonic fill | original). A run whose JSON exists is done: it is never trained or
scored again, so the study spreads over sessions and machines, one run at a time. The tables,
the claims table and the figures of RESULTS.md are rebuilt from the JSON files alone.
"""

from collections.abc import Iterable
import datetime
import json
import math
import os
from pathlib import Path
import platform as py_platform
import subprocess
import time

import jax
import numpy as np

from ce_jax import baselines as baselines_lib
from ce_jax import checkpoints, evaluate, images, masks, metrics, sharding, steps, train, visualize
from experiments import figures, render, report, runner

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / 'experiments' / 'results'
RESULTS_MD = REPO / 'experiments' / 'RESULTS.md'
# Images of the training split scored for the "train" column (in inference mode, centre crops).
TRAIN_SCORED = 320
GRID_ROWS = 3  # held-out images in each run's PNG
SUMMARY_METRICS = ('report_loss', 'l1', 'l2', 'psnr', 'ssim', 'lpips', 'sharpness')
log = train.log


def result_path(results_dir, protocol: str, table: int, cell: report.Cell, seed: int) -> Path:
  return Path(results_dir) / protocol / f'table{table}' / f'{cell.name}-seed{seed}.json'


def workdir_path(root, protocol: str, table: int, cell: report.Cell, seed: int) -> Path:
  return Path(root) / protocol / f'table{table}' / f'{cell.name}-seed{seed}'


def plan(protocol: str, tables: Iterable[int]) -> list[tuple[int, report.Cell, int]]:
  """Every (table, cell, seed) run, seed by seed: all cells' first seed before any second, so
  that a study stopped half way has every cell once."""
  tables = sorted(tables)
  runs = []
  for seed in range(max(len(report.seeds(protocol, t)) for t in tables)):
    for table in tables:
      if seed < len(report.seeds(protocol, table)):
        runs += [
            (table, cell, report.seeds(protocol, table)[seed])
            for cell in report.TABLES[table].cells
        ]
  return runs


def run_config(protocol: str, table: int, cell: report.Cell, seed: int, **kwargs):
  """`report.cell_config` with the run's seed (data order, crops, initialisation)."""
  config = report.cell_config(protocol, table, cell, **kwargs)
  config.seed = seed
  return config


def test_sets(config) -> dict[str, str]:
  """Test set name -> dataset: the protocol's held-out split, and the bundled held-out samples."""
  sets = {'heldout': config.dataset}
  if config.dataset != 'samples':
    sets['samples'] = 'samples'
  return sets


# ------------------------------------------------------------------------------------------------
# One run.


def hardware() -> str:
  device = jax.devices()[0]
  if device.platform != 'cpu':
    return f'{jax.device_count()} x {device.device_kind}'
  name = py_platform.processor() or 'CPU'
  try:
    with open('/proc/cpuinfo') as f:
      name = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return f'{name}, {os.cpu_count()} cores'


def commit() -> str | None:
  try:
    r = subprocess.run(
        ['git', 'rev-parse', '--short', 'HEAD'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=10,
    )
  except (OSError, subprocess.SubprocessError):
    return None
  return r.stdout.strip() or None


def train_run(config, workdir: Path) -> tuple[int, float]:
  """Trains (or resumes) `workdir` to its last step; returns (step, training seconds summed over
  the invocations that trained it). Raises runner.Interrupted if it stopped early."""
  n_steps = runner.final_step(config)
  seconds = runner._train_seconds(workdir)  # pylint: disable=protected-access
  done = runner.latest_step(workdir)
  if done is None or done < n_steps:
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    seconds += time.perf_counter() - start
    runner.write_json(workdir / runner.TIMING_FILE, {'train_seconds': seconds})
    done = runner.latest_step(workdir)
    if done is None or done < n_steps:
      raise runner.Interrupted(
          f'{workdir.name} stopped at step {done} of {n_steps}; run the same command again to '
          'resume it.'
      )
  return done, seconds


# The classical fills' scores of a test set, computed once per process: every run paints the
# same images with the same holes. Key: what an evaluation sees, bar the network's arithmetic.
_BASELINES: dict[str, dict] = {}


def _baseline_key(config) -> str:
  key = runner.eval_key(config)
  return json.dumps(
      {k: v for k, v in key.items() if k not in ('dtype', 'conv_impl')}, sort_keys=True
  )


def _metrics(values: dict) -> dict:
  return runner._metrics_only(values)  # pylint: disable=protected-access


def score_test_set(gen_variables, config, mesh, eval_step) -> dict:
  """The model on `config`'s test split beside report.BASELINES on the same holes, and photo by
  photo against the harmonic fill (the fills scored at the first call only, then reused)."""
  key = _baseline_key(config)
  kept = _BASELINES.get(key)
  res = evaluate.evaluate(
      gen_variables,
      config,
      mesh=mesh,
      eval_step=eval_step,
      baselines=() if kept else report.BASELINES,
      per_image=True,
  )
  if kept is None:
    kept = _BASELINES[key] = {
        'scores': {b: _metrics(res[b]) for b in report.BASELINES},
        'harmonic_psnr': list(res['per_image']['harmonic']['psnr']),
    }
  model_psnr = res['per_image']['model']['psnr']
  if len(model_psnr) != len(kept['harmonic_psnr']):
    raise ValueError(
        f'{config.dataset}: {len(model_psnr)} test images, not the '
        f'{len(kept["harmonic_psnr"])} the classical fills were scored on.'
    )
  return (
      {'model': _metrics(res['model'])}
      | kept['scores']
      | {'model_vs_harmonic': metrics.compare(model_psnr, kept['harmonic_psnr'])}
  )


def score_run(config, workdir: Path, mesh, grid_path: Path | None = None) -> dict:
  """The final checkpoint of `workdir` on every test set beside the classical fills, and on
  TRAIN_SCORED training images; writes the grid PNG of the first held-out images."""
  saved, gen_variables, step = checkpoints.load_generator(workdir)
  checkpoints.check_compatible(saved, config, str(workdir))
  gen_variables = jax.device_put(gen_variables, sharding.replicated(mesh))
  eval_step = steps.make_eval_step(config)
  scores = {'step': step, 'test': {}}
  for name, dataset in test_sets(config).items():
    c = config.copy_and_resolve_references()
    c.dataset = dataset
    scores['test'][name] = score_test_set(gen_variables, c, mesh, eval_step)
  res = evaluate.evaluate(
      gen_variables,
      config,
      mesh=mesh,
      split='train',
      max_examples=TRAIN_SCORED,
      eval_step=eval_step,
  )
  scores['train'] = _metrics(res['model'])
  if grid_path is not None:
    save_run_grid(grid_path, config, mesh, gen_variables, eval_step)
  return scores


def first_test_batch(config, mesh) -> tuple[dict, int]:
  """The first held-out batch as every evaluation sees it (device arrays), and its valid rows."""
  batches, _ = evaluate.eval_batches(config, mesh)
  batch = next(batches)
  batches.close()
  return batch, int(np.asarray(batch['valid']).sum())


def save_run_grid(path: Path, config, mesh, gen_variables, eval_step) -> Path:
  """A small PNG: masked | model | harmonic fill | original for the first GRID_ROWS held-out
  images, at the protocol's size (no enlargement: it is committed)."""
  batch, valid = first_test_batch(config, mesh)
  filled, _ = eval_step(gen_variables, batch)
  batch, filled = sharding.to_host((batch, filled))
  n = min(GRID_ROWS, valid)
  holes = masks.fill_hole(batch['image'], batch['mask'], config.fill)
  columns = {
      'masked': np.asarray(holes),
      'model': np.asarray(filled),
      'harmonic': baselines_lib.harmonic(batch),
      'original': np.asarray(batch['image']),
  }
  path.parent.mkdir(parents=True, exist_ok=True)
  visualize.grid({k: v[:n] for k, v in columns.items()}).save(path, optimize=True)
  return path


def run_one(
    protocol: str,
    table: int,
    cell: report.Cell,
    seed: int,
    *,
    root,
    results_dir,
    mesh,
    config=None,
    **kwargs,
) -> dict:
  """Trains, scores and records one run (RESULTS_DIR/.../CELL-seedK.json and .png)."""
  config = config or run_config(protocol, table, cell, seed, **kwargs)
  workdir = workdir_path(root, protocol, table, cell, seed)
  out = result_path(results_dir, protocol, table, cell, seed)
  log('%s table %d seed %d: %s', cell.name, table, seed, workdir)
  step, train_seconds = train_run(config, workdir)
  start = time.perf_counter()
  scores = score_run(config, workdir, mesh, out.with_suffix('.png'))
  result = {
      'protocol': protocol,
      'table': table,
      'cell': cell.name,
      'model': cell.model,
      'encoder': cell.encoder,
      'bottleneck': cell.bottleneck,
      'seed': seed,
      'steps': step,
      'setup': {
          k: config[k]
          for k in ('image_size', 'hole_size', 'batch_size', 'gen_width', 'disc_width', 'dtype')
      }
      | {'overlap': config.mask.overlap, 'dataset': config.dataset},
      'hardware': hardware(),
      'train_seconds': train_seconds,
      'eval_seconds': time.perf_counter() - start,
      'finished_at': datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC'),
      'commit': commit(),
      **scores,
  }
  runner.write_json(out, result)
  log(
      '%s seed %d: held-out L2 %.3f %% (harmonic %.3f %%), %.0f s training -> %s',
      cell.name,
      seed,
      result['test']['heldout']['model']['l2'],
      result['test']['heldout']['harmonic']['l2'],
      train_seconds,
      out,
  )
  return result


def run_study(
    protocol: str,
    root,
    tables: Iterable[int] = (1, 2, 3),
    *,
    results_dir=RESULTS_DIR,
    results_md: Path | None = None,
    max_runs: int | None = None,
    deadline: float | None = None,
    run_seconds=None,
    config_hook=None,
    cells=None,
    **kwargs,
) -> list[dict]:
  """Every run of `tables` not yet recorded in `results_dir`, one at a time, in `plan` order.

  After each run the tables of `results_md` are rebuilt. max_runs: stop after that many runs;
  deadline (time.time()): start no run whose `run_seconds(config)` estimate ends past it.
  config_hook(config) may change a run's config last (the accelerator run's step scale);
  cells: only the cells of these names.
  Returns the results of the runs done now.
  """
  mesh = sharding.data_mesh()
  done = []
  for table, cell, seed in plan(protocol, tables):
    if result_path(results_dir, protocol, table, cell, seed).is_file():
      continue
    if cells and cell.name not in cells:
      continue
    if max_runs is not None and len(done) >= max_runs:
      log('Stopping after %d runs (--max_runs); the same command goes on.', len(done))
      break
    config = run_config(protocol, table, cell, seed, **kwargs)
    if config_hook is not None:
      config_hook(config)
    if deadline is not None and run_seconds is not None:
      if time.time() + run_seconds(config) > deadline:
        log('%s seed %d: not started, it would end past the deadline.', cell.name, seed)
        continue
    done.append(
        run_one(
            protocol,
            table,
            cell,
            seed,
            root=root,
            results_dir=results_dir,
            mesh=mesh,
            config=config,
        )
    )
    if results_md is not None and jax.process_index() == 0:
      rebuild(protocol, results_dir, results_md)
  return done


# ------------------------------------------------------------------------------------------------
# From the result files to tables.


def load_results(results_dir, protocol: str) -> dict:
  """{(table, cell name): [result of each seed, by seed]} of every recorded run."""
  found = {}
  for path in sorted((Path(results_dir) / protocol).glob('table*/*-seed*.json')):
    r = json.loads(path.read_text())
    found.setdefault((r['table'], r['cell']), []).append(r)
  return {k: sorted(v, key=lambda r: r['seed']) for k, v in found.items()}


def mean_sd(values) -> tuple[float, float | None]:
  """Mean and sample standard deviation (None with one value)."""
  values = [float(v) for v in values]
  if not values:
    return math.nan, None
  sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), sd


def _get(result: dict, path: str):
  value = result
  for key in path.split('.'):
    if not isinstance(value, dict) or key not in value:
      return None
    value = value[key]
  return value


def stat(runs: list[dict], path: str) -> tuple[float, float | None, int] | None:
  """(mean, sd, n) of a dotted field over the runs that have it, or None."""
  values = [v for r in runs if (v := _get(r, path)) is not None]
  if not values:
    return None
  m, sd = mean_sd(values)
  return m, sd, len(values)


def fmt(s, digits: int = 3) -> str:
  """'mean ± sd' (or the value alone with one seed), '—' when missing."""
  if s is None:
    return '—'
  m, sd, _ = s
  text = f'{m:.{digits}g}'
  return f'{text} ± {sd:.2g}' if sd is not None else text


def report_l2(loss: float | None, hole: int = 64) -> float | None:
  """The report's loss (a sum of squared errors over the hole's 64x64x3 values in [-1, 1]) as an
  L2 % in [0, 1]: 100 x loss / (4 x hole^2 x 3)."""
  return None if loss is None else 100 * loss / (4 * hole * hole * 3)


def beyond_spread(a, b) -> bool | None:
  """Whether two cells' means differ by more than the sum of their seeds' standard deviations
  (None while either has fewer than two seeds)."""
  if a is None or b is None or a[1] is None or b[1] is None:
    return None
  return abs(a[0] - b[0]) > a[1] + b[1]


TABLE_HEADER = (
    '| model | bottleneck | seeds | steps | train time / run | train L2 % | test L2 % | '
    'test report loss | '
    'test L1 % | test PSNR dB | test SSIM | test LPIPS | sharpness | PSNR − harmonic dB | '
    'wins vs harmonic | samples PSNR dB | report: test loss (as L2 %) |'
)


def _runs_seconds(runs) -> str:
  s = stat(runs, 'train_seconds')
  return render.duration(s[0]) if s else '—'


def table_block(protocol: str, table: int, results: dict) -> str:
  """A table of the study: every cell's mean ± sd over its seeds beside the classical fills."""
  spec = report.TABLES[table]
  n_seeds = len(report.seeds(protocol, table))
  lines = [TABLE_HEADER, '|---|---:|---:|---:|---:|' + '---:|' * 12]
  base = None
  for cell in spec.cells:
    runs = results.get((table, cell.name), [])
    theirs = report.REPORT[table].get(cell.name, (None, None))[1]
    theirs_text = (
        f'{render.number(theirs, 6)} ({report_l2(theirs):.2f} %)' if theirs is not None else '—'
    )
    if not runs:
      lines.append(
          f'| {cell.label()} | {cell.bottleneck} | 0 of {n_seeds} | pending |'
          + ' — |' * 12
          + f' {theirs_text} |'
      )
      continue
    base = base or runs[0]['test']
    h = 'test.heldout.'
    lines.append(
        '| '
        + ' | '.join(
            [
                cell.label(),
                str(cell.bottleneck),
                f'{len(runs)} of {n_seeds}',
                str(runs[0]['steps']),
                _runs_seconds(runs),
                fmt(stat(runs, 'train.l2')),
                fmt(stat(runs, h + 'model.l2')),
                fmt(stat(runs, h + 'model.report_loss'), 4),
                fmt(stat(runs, h + 'model.l1')),
                fmt(stat(runs, h + 'model.psnr'), 4),
                fmt(stat(runs, h + 'model.ssim')),
                fmt(stat(runs, h + 'model.lpips')),
                fmt(stat(runs, h + 'model.sharpness')),
                fmt(stat(runs, h + 'model_vs_harmonic.mean_diff'), 2),
                fmt(stat(runs, h + 'model_vs_harmonic.win_rate'), 2),
                fmt(stat(runs, 'test.samples.model.psnr'), 4),
                theirs_text,
            ]
        )
        + ' |'
    )
  for b in report.BASELINES:
    v = (base or {}).get('heldout', {}).get(b)
    if not v:
      continue
    sample = (base.get('samples') or {}).get(b)
    values = [
        fmt((v[m], None, 1), 4 if m in ('psnr', 'report_loss') else 3) if m in v else '—'
        for m in ('l2', 'report_loss', 'l1', 'psnr', 'ssim', 'lpips', 'sharpness')
    ]
    lines.append(
        f'| {render.BASELINE_LABELS[b]} (classical fill) | — | — | — | — | — | '
        + ' | '.join(values)
        + f' | — | — | {fmt((sample["psnr"], None, 1), 4) if sample else "—"} | — |'
    )
  if base:
    lines.append('')
    lines.append(
        f'Held-out test set: {base["heldout"]["model"]["images"]} photos (the bundled samples: '
        f'{base.get("samples", {}).get("model", {}).get("images", "—")}); the classical fills '
        'painted the same holes of the same photos.'
    )
  return '\n'.join(lines)


def bottleneck_block(protocol: str, results: dict) -> str:
  """Table 3 as the report lays it out: test L2 % per row and bottleneck, ours beside theirs."""
  spec = report.TABLES[3]
  head = '| model | ' + ' | '.join(f'{b}: ours' for b in spec.bottlenecks)
  head += ' | ' + ' | '.join(f'{b}: report' for b in spec.bottlenecks) + ' | lowest here |'
  lines = [head, '|---|' + '---:|' * (2 * len(spec.bottlenecks)) + '---|']
  for label, row in spec.rows_by_model():
    stats = [stat(results.get((3, c.name), []), 'test.heldout.model.l2') for c in row]
    theirs = [report_l2(report.REPORT[3][c.name][1]) for c in row]
    ready = [s for s in stats if s is not None]
    best = '—'
    if len(ready) == len(stats):
      best = str(row[int(np.argmin([s[0] for s in stats]))].bottleneck)
    lines.append(
        f'| {label} | '
        + ' | '.join(fmt(s) if s else 'pending' for s in stats)
        + ' | '
        + ' | '.join(f'{t:.2f}' for t in theirs)
        + f' | {best} |'
    )
  return '\n'.join(lines)


def spread_block(protocol: str, table: int, results: dict) -> str:
  """Which pairs of cells (Table 3: within a row) differ in test L2 % by more than the spread."""
  spec = report.TABLES[table]
  groups = [row for _, row in spec.rows_by_model()] if spec.by_bottleneck else [list(spec.cells)]
  beyond, within, pending = [], [], 0
  for group in groups:
    for i, a in enumerate(group):
      for b in group[i + 1 :]:
        sa = stat(results.get((table, a.name), []), 'test.heldout.model.l2')
        sb = stat(results.get((table, b.name), []), 'test.heldout.model.l2')
        verdict = beyond_spread(sa, sb)
        if verdict is None:
          pending += 1
          continue
        lo, hi = (a, b) if sa[0] < sb[0] else (b, a)
        gap = abs(sa[0] - sb[0])
        text = f'{lo.label(spec.by_bottleneck)} < {hi.label(spec.by_bottleneck)} ({gap:.2g})'
        (beyond if verdict else within).append(text)
  if not beyond and not within:
    return f'Spread between seeds: none of the {pending} pairs of cells has its seeds yet.'
  lines = [
      f"Differences of test L2 % larger than the spread (the two seeds' standard deviations "
      f'summed): {"; ".join(beyond) or "none"}.',
      f'Within the spread: {"; ".join(within) or "none"}.',
  ]
  if pending:
    lines.append(f'{pending} pairs wait for their seeds.')
  return ' '.join(lines)


def status_block(protocol: str, results: dict) -> str:
  """Which runs are measured and which are pending, per table."""
  lines = []
  total = measured = 0
  for table, spec in report.TABLES.items():
    n = len(report.seeds(protocol, table))
    done = {c.name: len(results.get((table, c.name), [])) for c in spec.cells}
    total += n * len(spec.cells)
    measured += sum(done.values())
    pending = [
        f'{c.label(spec.by_bottleneck)} ({n - done[c.name]})'
        for c in spec.cells
        if done[c.name] < n
    ]
    lines.append(
        f'* Table {table}: {sum(done.values())} of {n * len(spec.cells)} runs measured'
        + (f'; pending (seeds left): {", ".join(pending)}.' if pending else '; complete.')
    )
  return '\n'.join([f'**{measured} of {total} runs measured.**', '', *lines])


# ------------------------------------------------------------------------------------------------
# The report's claims against these runs.


def _l2(results, table, name):
  return stat(results.get((table, name), []), 'test.heldout.model.l2')


def _sharp(results, table, name):
  return stat(results.get((table, name), []), 'test.heldout.model.sharpness')


def _pair_text(a_label, a, b_label, b) -> str:
  return f'{a_label} {fmt(a)} vs {b_label} {fmt(b)}'


def _verdict(holds: bool, clear: list) -> str:
  if any(c is None for c in clear):
    spread = 'spread not yet known (one seed)'
  elif all(clear):
    spread = "beyond the seeds' spread"
  else:
    spread = "not beyond the seeds' spread"
  return f'{"yes" if holds else "no"}, {spread}'


def _less(results, table, better: list[str], worse: list[str], stat_fn=_l2):
  """Does every cell of `better` beat (lower) every cell of `worse`? (holds, clear, evidence)."""
  names = better + worse
  stats = {n: stat_fn(results, table, n) for n in names}
  if any(s is None for s in stats.values()):
    return None
  holds = all(stats[b][0] < stats[w][0] for b in better for w in worse)
  clear = [beyond_spread(stats[b], stats[w]) for b in better for w in worse]
  label = {c.name: c.label(True) for t in report.TABLES.values() for c in t.cells}
  evidence = '; '.join(f'{label[n]} {fmt(stats[n])}' for n in names)
  return holds, clear, evidence


def claims(results: dict) -> list[tuple[str, str, str]]:
  """(claim, holds here?, evidence) for each of the report's conclusions."""
  rows = []

  def add(claim, found, unit='test L2 %'):
    if found is None:
      rows.append((claim, 'pending', 'waits for its cells'))
    else:
      holds, clear, evidence = found
      rows.append((claim, _verdict(holds, clear), f'{unit}: {evidence}'))

  add(
      'VAE: the ResNet and VGG encoders beat AlexNet (Table 1)',
      _less(results, 1, ['vae_resnet_4000', 'vae_vgg_4000'], ['vae_alexnet_4000']),
  )
  vgg, resnet = _l2(results, 1, 'vae_vgg_4000'), _l2(results, 1, 'vae_resnet_4000')
  if vgg and resnet:
    same = beyond_spread(vgg, resnet)
    verdict = 'pending (one seed)' if same is None else ('no' if same else 'yes')
    rows.append(
        (
            'VAE: VGG and ResNet perform very similarly (Table 1)',
            verdict,
            f'test L2 %: {_pair_text("VGG", vgg, "ResNet", resnet)}; "similar" = within the spread',
        )
    )
  else:
    rows.append(
        ('VAE: VGG and ResNet perform very similarly (Table 1)', 'pending', 'waits for its cells')
    )
  add(
      'GAN: AlexNet is the best encoder (Table 2; here among AlexNet, ResNet, VGG, Pathak)',
      _less(
          results, 2, ['gan_alexnet_4000'], ['gan_resnet_4000', 'gan_vgg_4000', 'gan_pathak_4000']
      ),
  )
  add(
      'GAN: ResNet is far worse than AlexNet (Table 2: +72 % report loss)',
      _less(results, 2, ['gan_alexnet_4000'], ['gan_resnet_4000']),
  )
  encoders = ('alexnet', 'vgg', 'resnet')

  def across_families(stat_fn, gan_higher: bool):
    pairs = []
    for e in encoders:
      v, g = stat_fn(results, 1, f'vae_{e}_4000'), stat_fn(results, 2, f'gan_{e}_4000')
      if v is None or g is None:
        return None
      pairs.append((e, v, g))
    holds = all((g[0] > v[0]) == gan_higher for _, v, g in pairs)
    clear = [beyond_spread(v, g) for _, v, g in pairs]
    evidence = '; '.join(
        f'{report.ENCODER_LABELS[e]}: GAN {fmt(g)} vs VAE {fmt(v)}' for e, v, g in pairs
    )
    return holds, clear, evidence

  add(
      'GAN fills are sharper than VAE fills (Figures 4-6)',
      across_families(_sharp, True),
      'sharpness (fill gradient / truth, 1 = as sharp as the photo)',
  )
  add('GAN fills are less accurate than VAE fills (§4.3, §5)', across_families(_l2, True))
  t3 = report.TABLES[3]
  worst, gan_best, vae_best = [], [], []
  for label, row in t3.rows_by_model():
    stats = {c.bottleneck: _l2(results, 3, c.name) for c in row}
    if any(s is None for s in stats.values()):
      worst = gan_best = vae_best = None
      break
    worst.append((label, stats))
    (gan_best if label.startswith('GAN') else vae_best).append((label, stats))

  def bottleneck_claim(rows, size, lowest: bool):
    if rows is None:
      return None
    holds, clear, parts = True, [], []
    for label, stats in rows:
      others = [b for b in stats if b != size]
      if lowest:
        holds &= all(stats[size][0] < stats[b][0] for b in others)
      else:
        holds &= all(stats[size][0] > stats[b][0] for b in others)
      clear += [beyond_spread(stats[size], stats[b]) for b in others]
      parts.append(f'{label}: ' + ', '.join(f'{b} {fmt(s)}' for b, s in stats.items()))
    return holds, clear, '; '.join(parts)

  add('Bottleneck 500 is the worst in every row (Table 3)', bottleneck_claim(worst, 500, False))
  add('Bottleneck 4000 is the best for GANs (Table 3)', bottleneck_claim(gan_best, 4000, True))
  add('Bottleneck 2000 is the best for VAEs (Table 3)', bottleneck_claim(vae_best, 2000, True))
  return rows


def claims_block(results: dict) -> str:
  lines = [
      "| the report's claim | holds here? | evidence (mean ± sd over seeds, held-out set) |",
      '|---|---|---|',
  ]
  lines += [f'| {c} | {v} | {e} |' for c, v, e in claims(results)]
  return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------
# RESULTS.md: blocks between markers, rebuilt from the result files.


def blocks(protocol: str, results_dir) -> dict[str, str]:
  results = load_results(results_dir, protocol)
  out = {'status': status_block(protocol, results), 'claims': claims_block(results)}
  for table in report.TABLES:
    text = table_block(protocol, table, results)
    if report.TABLES[table].by_bottleneck:
      text += "\n\nBy bottleneck size (test L2 %, ours; the report's loss as L2 %):\n\n"
      text += bottleneck_block(protocol, results)
    out[f'table{table}'] = text + '\n\n' + spread_block(protocol, table, results)
  return out


def begin(name: str, protocol: str) -> str:
  return f'<!-- BEGIN {protocol}:{name} (rebuilt by experiments.study; do not edit) -->'


def end(name: str, protocol: str) -> str:
  return f'<!-- END {protocol}:{name} -->'


def update_markdown(text: str, protocol: str, new_blocks: dict[str, str]) -> str:
  """`text` with the contents between each block's markers replaced; a missing marker is an
  error (the page is written by hand around the blocks)."""
  for name, body in new_blocks.items():
    b, e = begin(name, protocol), end(name, protocol)
    if b not in text or e not in text:
      raise ValueError(f'RESULTS.md has no {b} ... {e} block.')
    head, rest = text.split(b, 1)
    _, tail = rest.split(e, 1)
    text = f'{head}{b}\n{body}\n{e}{tail}'
  return text


def standalone_markdown(protocol: str, results_dir, title: str) -> str:
  """A page of every block (for a run whose results are not in the repository's RESULTS.md)."""
  parts = [f'# {title}', '']
  for name, body in blocks(protocol, results_dir).items():
    parts += [f'## {name}', '', body, '']
  return '\n'.join(parts)


def rebuild(protocol: str, results_dir=RESULTS_DIR, results_md=RESULTS_MD) -> Path:
  path = Path(results_md)
  path.write_text(update_markdown(path.read_text(), protocol, blocks(protocol, results_dir)))
  return path


# ------------------------------------------------------------------------------------------------
# Figures 4-7 from the runs' workdirs (seed 0 of each cell).


def draw_figures(protocol: str, root, results_dir=RESULTS_DIR, **kwargs) -> list[Path]:
  """Figures 4 and 5 (every encoder of each family on the first held-out images) and 6 and 7
  (the best VAE beside the best GAN on the held-out images both paint best and worst), from the
  seed-0 workdirs under `root`. Needs Tables 1 and 2 measured; returns the PNGs written."""
  results = load_results(results_dir, protocol)
  out = Path(results_dir) / protocol / 'figures'
  mesh = sharding.data_mesh()
  painters = {}
  for table in (1, 2):
    for cell in report.TABLES[table].cells:
      workdir = workdir_path(root, protocol, table, cell, 0)
      if (table, cell.name) not in results or runner.latest_step(workdir) is None:
        raise ValueError(
            f'Figures need every cell of Tables 1 and 2 (seed 0) trained under {root}; '
            f'{cell.name} is not.'
        )
      config = run_config(protocol, table, cell, 0, **kwargs)
      painters[cell.name] = figures.restore_painter(cell, config, str(workdir), mesh)
  written = []
  first = next(iter(painters.values())).config
  batch, valid = first_test_batch(first, mesh)
  n = min(4, valid)
  for table, stem in ((1, 'figure4'), (2, 'figure5')):
    columns = {'original': images.to_uint8(sharding.to_host(batch['image']))[:n]}
    for cell in report.TABLES[table].cells:
      p = painters[cell.name]
      filled, _ = p.eval_step(p.variables, batch)
      columns[cell.label()] = images.to_uint8(sharding.to_host(filled))[:n]
    written.append(render.save_grid(out / f'{stem}.png', columns))
  best = {}
  for kind, table in figures.FAMILIES.items():
    names = [c.name for c in report.TABLES[table].cells]
    best[kind] = min(names, key=lambda n: stat(results[(table, n)], 'test.heldout.model.l2')[0])
  chosen = {kind: painters[name] for kind, name in best.items()}
  ranked, seen = figures.rank_test_images(first, chosen, mesh)
  k = min(first.grid_images, len(ranked['score']))
  for stem, idx in (
      ('figure6', np.arange(k)),
      ('figure7', np.arange(len(ranked['score']))[::-1][:k]),
  ):
    columns = {'original': ranked['original'][idx]}
    columns |= {chosen[kind].cell.label(): ranked[kind][idx] for kind in chosen}
    written.append(render.save_grid(out / f'{stem}.png', columns))
  runner.write_json(
      out / 'figures.json',
      {'best': best, 'ranked_images': seen, 'ranked_by': 'VAE + GAN report loss (seed 0)'},
  )
  return written
