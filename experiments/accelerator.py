"""One call on one accelerator: the quick protocol's every cell (one seed) and a speed row, within a
wall-clock budget; every result under $OUT. Started by experiments/accelerator_run.sh.

Order: (1) unpack the photos (one .npz, experiments/study_data.py) into a folder read by the
TensorFlow-free threaded loader; (2) the speed row: the original GAN step (configs 'pathak':
128/64, batch 64) in bfloat16 and float32, images/s, step time, compile time, XLA's FLOPs and
MFU; (3) the quick protocol (128/64, overlap 0, batch 32; Tables 1-2 3000 steps, Table 3 900)
on the same photos, held out by group, seed 0, each run scored beside the classical fills on
the held-out photos and the bundled samples (experiments/study.py). Before (3) it estimates each
run's seconds from the speed row (compile time, and step time scaled by the run's FLOPs against
the original step's); if the sum does not fit before the deadline, every run's length is scaled
by one factor (Table 3 stays at 30 % of Tables 1-2: the report's 100:30), and the factor is
written in the results. A run that would still end past the deadline is not started.

Environment: OUT (results), STUDY_NPZ (the photos, default runs/accelerator_data/photos.npz),
ACCEL_BUDGET_S (seconds for the whole call, default 510), ACCEL_SIZE=full|tiny (tiny: the CI
test's 32-px networks, two steps), ACCEL_DTYPE (the quick runs' compute dtype, default bfloat16),
ACCEL_CELLS (comma-separated cell names to run; default every cell).
"""

import concurrent.futures
import json
import os
from pathlib import Path
import shutil
import tarfile
import tempfile
import time
import traceback

START = time.time()

import jax  # noqa: E402  (the clock starts before the imports: they count against the budget)

from ce_jax import bench, configs, platform, sharding, steps  # noqa: E402
from experiments import report, study, study_data  # noqa: E402

SPEED_STEPS = {'full': 20, 'tiny': 2}
QUICK_STEPS = 3000  # report.protocol_config('quick', 1).num_steps
RESERVE_S = 25  # kept for writing the results at the end


def env(name: str, default: str) -> str:
  return os.environ.get(name) or default


def log(message: str) -> None:
  print(f'[accelerator {time.time() - START:6.1f} s] {message}', flush=True)


def speed_config(size: str, dtype: str):
  c = configs.get('pathak') if size == 'full' else configs.get('tiny')
  c.dtype = dtype
  return c


def speed_row(size: str, dtypes) -> list[dict]:
  """bench.bench_train_step of the original GAN step in each dtype."""
  rows = []
  for dtype in dtypes:
    config = speed_config(size, dtype)
    row = {'config': 'pathak' if size == 'full' else 'tiny', 'dtype': dtype}
    row |= {k: config[k] for k in ('image_size', 'hole_size', 'batch_size', 'bottleneck')}
    try:
      row |= bench.bench_train_step(config, SPEED_STEPS[size])
    except Exception as e:  # pylint: disable=broad-except  # one failed row must not end the call
      row['error'] = f'{type(e).__name__}: {e}'
    log(json.dumps(row))
    rows.append(row)
  return rows


def lowered_train_step(config):
  """`config`'s train step lowered for the shardings training gives it (state replicated, batch
  split over the mesh), so that compiling it fills the persistent cache with the program that
  `train.train_and_evaluate` asks for."""
  mesh = sharding.data_mesh()

  def place(tree, where):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where), tree)

  state = jax.eval_shape(lambda k: steps.create_train_state(config, k), jax.random.PRNGKey(0))
  batch = jax.eval_shape(lambda: bench.random_batch(config))
  state = place(state, sharding.replicated(mesh))
  batch = place(batch, sharding.batch_sharding(mesh))
  return steps.make_train_step(config, mesh).lower(state, batch)


def step_gflops(lowered) -> float | None:
  """XLA's FLOPs of a lowered (not compiled) train step, or None."""
  try:
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost['flops']) / 1e9 if cost and cost.get('flops') else None
  except Exception:  # pylint: disable=broad-except  # an estimate only
    return None


def compile_ahead(lowered: list, workers: int = 4) -> list:
  """Compiles the train steps in background threads (XLA compiles outside the GIL), filling
  the persistent compilation cache while the first runs train; best effort."""
  pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix='compile_ahead')

  def compile_one(low):
    try:
      low.compile()
    except Exception:  # pylint: disable=broad-except  # the run compiles it itself then
      pass

  futures = [pool.submit(compile_one, low) for low in lowered]
  pool.shutdown(wait=False)
  return futures


def quick_overrides(size: str, dtype: str) -> dict:
  """Fields every quick run changes: the compute dtype, the periodic evaluation cut to a glance
  at the last step (each run is scored once by experiments.study), one checkpoint kept."""
  overrides = {'dtype': dtype, 'eval_every': 100_000, 'eval_examples': 64, 'keep_checkpoints': 1}
  if size == 'tiny':  # the CI test: 32-px networks of width 8
    overrides |= {
        'image_size': 32,
        'hole_size': 16,
        'gen_width': 8,
        'disc_width': 8,
        'eval_batch_size': 16,
        'grid_images': 2,
    }
  return overrides


def quick_configs(dataset: str, size: str, dtype: str, cells: set[str]) -> list:
  """(table, cell, config) of every quick run to do, at the quick protocol's full length."""
  overrides = quick_overrides(size, dtype)
  runs = []
  for table, cell, seed in study.plan('quick', (1, 2, 3)):
    if cells and cell.name not in cells:
      continue
    config = study.run_config('quick', table, cell, seed, dataset=dataset, overrides=overrides)
    runs.append((table, cell, config))
  return runs


def main() -> int:
  out = Path(env('OUT', 'runs/accelerator'))
  out.mkdir(parents=True, exist_ok=True)
  size = env('ACCEL_SIZE', 'full')
  budget = float(env('ACCEL_BUDGET_S', '510'))
  deadline = START + budget
  dtype = env('ACCEL_DTYPE', 'bfloat16')
  cells = {c for c in env('ACCEL_CELLS', '').split(',') if c}
  npz = Path(env('STUDY_NPZ', 'runs/accelerator_data/photos.npz'))
  platform.setup()
  device = f'{jax.device_count()} x {jax.devices()[0].device_kind}'
  log(f'{device}, jax {jax.__version__}; budget {budget:.0f} s; photos {npz}')
  summary = {'device': device, 'jax': jax.__version__, 'size': size, 'budget_s': budget}
  work = Path(tempfile.mkdtemp(prefix='ce_accel_'))
  photos = work / 'photos'
  summary['photos'] = study_data.unpack(npz, photos)
  log(f'unpacked {summary["photos"]}')
  if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):  # a fresh one, unless the caller keeps one
    jax.config.update('jax_compilation_cache_dir', str(work / 'jax_cache'))

  dtypes = ('bfloat16', 'float32') if size == 'full' else ('float32',)
  summary['speed'] = speed_row(size, dtypes)
  (out / 'speed.json').write_text(json.dumps(summary['speed'], indent=2))

  runs = quick_configs(f'folder:{photos}', size, dtype, cells)
  ref = next((r for r in summary['speed'] if r['dtype'] == dtype and 'error' not in r), None)
  ref = ref or next((r for r in summary['speed'] if 'error' not in r), None)
  ref_gflops = (ref or {}).get('step_gflops') or None
  # The train steps of the distinct networks compile in background threads from here on (the
  # later ones ahead of their runs). Estimate per run: fixed seconds (its eval and init
  # programs, a cache load, its scoring) and seconds per step (the speed row's step time x the
  # run's FLOPs over the original step's, batch 32 against 64, x 1.3 for the smaller, less
  # efficient networks); one compile more for the first run.
  lowered, gflops = {}, {}
  for _, cell, config in runs:
    if cell.name not in lowered:
      try:
        lowered[cell.name] = lowered_train_step(config)
      except Exception as e:  # pylint: disable=broad-except  # the run will say what is wrong
        log(f'{cell.name}: could not lower its train step ({type(e).__name__}: {e})')
        continue
      gflops[cell.name] = step_gflops(lowered[cell.name])
  if jax.devices()[0].platform != 'cpu':  # on a CPU the threads would take the run's cores
    compile_ahead(list(lowered.values()))
  compile_s = (ref or {}).get('compile_s', 20.0)
  fixed_s = 0.5 * compile_s + 15.0  # its eval and init programs, a cache load, its scoring
  per_step = {}
  for table, cell, _ in runs:
    g = gflops.get(cell.name)
    ratio = g / ref_gflops if g and ref_gflops else 1.0
    per_step[(table, cell.name)] = 1.3 * ratio * (ref or {}).get('step_ms', 100.0) / 1e3
  full = {k: (QUICK_STEPS * 3 // 10 if k[0] == 3 else QUICK_STEPS) for k in per_step}
  variable = sum(per_step[k] * full[k] for k in per_step)
  available = deadline - time.time() - RESERVE_S - compile_s - fixed_s * len(runs)
  scale = 1.0 if size == 'tiny' else max(0.01, min(1.0, available / max(variable, 1e-9)))
  long_steps = 2 if size == 'tiny' else max(10, round(QUICK_STEPS * scale))
  short_steps = report.short_steps(long_steps) if size != 'tiny' else 1
  summary['plan'] = {
      'scale': scale,
      'steps_tables_1_2': long_steps,
      'steps_table_3': short_steps,
      'step_gflops': gflops,
      'fixed_s_per_run': fixed_s,
      'estimated_s': {
          f'{c.name}@table{t}': fixed_s
          + per_step[(t, c.name)] * (short_steps if t == 3 else long_steps)
          for t, c, _ in runs
      },
  }
  log(
      f'quick protocol: {len(runs)} runs, {long_steps} steps (Tables 1-2) / {short_steps} '
      f"(Table 3), scale {scale:.3f} of the protocol's 3000 / 900"
  )

  def hook(config):
    config.num_steps = short_steps if config.num_steps < QUICK_STEPS else long_steps
    config.checkpoint_every = config.num_steps

  def run_seconds(config):
    key = next(
        k for k in per_step if k[1] == f'{config.model}_{config.encoder}_{config.bottleneck}'
    )
    return fixed_s + per_step[key] * config.num_steps

  results_dir = work / 'results'
  error = None
  try:
    done = study.run_study(
        'quick',
        work / 'runs',
        tables=(1, 2, 3),
        results_dir=results_dir,
        deadline=deadline - RESERVE_S,
        run_seconds=run_seconds,
        config_hook=hook,
        dataset=f'folder:{photos}',
        overrides=quick_overrides(size, dtype),
        cells=cells or None,
    )
  except Exception as e:  # pylint: disable=broad-except  # keep what finished
    error = f'{type(e).__name__}: {e}'
    traceback.print_exc()
    done = []
  summary['runs_done_now'] = [
      {
          'table': r['table'],
          'cell': r['cell'],
          'steps': r['steps'],
          'train_s': r['train_seconds'],
          'eval_s': r['eval_seconds'],
      }
      for r in done
  ]
  summary['error'] = error
  summary['wall_s'] = time.time() - START
  (out / 'RESULTS_quick.md').write_text(
      study.standalone_markdown(
          'quick',
          results_dir,
          f'Quick protocol on {device} ({summary["plan"]["steps_tables_1_2"]} / '
          f'{summary["plan"]["steps_table_3"]} steps, {dtype})',
      )
  )
  if results_dir.is_dir():
    with tarfile.open(out / 'results.tar.gz', 'w:gz') as tar:
      tar.add(results_dir, arcname='results')
  (out / 'accelerator.json').write_text(json.dumps(summary, indent=2, default=str))
  log(f'done: {len(done)} runs in {summary["wall_s"]:.0f} s; results under {out}')
  shutil.rmtree(work, ignore_errors=True)
  return 1 if error else 0


if __name__ == '__main__':
  raise SystemExit(main())
