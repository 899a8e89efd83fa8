"""Trains a context encoder on every device: the training loop, in one readable place.

  python -m ce_jax.train --model=gan --encoder=alexnet              # bundled sample photos
  python -m ce_jax.train --config=paper --model=vae --encoder=vgg --data_dir=DIR
  python -m ce_jax.train --config=demo --workdir=runs/demo         # again: resumes where it stopped

A workdir that holds a checkpoint is resumed; SIGTERM / SIGINT (Ctrl-C) save one and exit.
The workdir gets TensorBoard events, metrics.jsonl, checkpoints/ and grids/step_N.png.
"""

import json
import math
from pathlib import Path
import signal
import sys
import time

from absl import app, flags, logging
from clu import metric_writers
import jax
import numpy as np
import tqdm

from ce_jax import checkpoints, cli, evaluate, input_pipeline, models, sharding, steps


def log(message: str, *args) -> None:
  """Progress lines on stderr from the first host (library INFO logging stays off: orbax is chatty)."""
  if jax.process_index() == 0:
    print(time.strftime('%H:%M:%S ') + message % args, file=sys.stderr, flush=True)


class StopRequest:
  """Turns SIGTERM / SIGINT into a flag the loop reads, so it can save before exiting."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for s in (signal.SIGTERM, signal.SIGINT):
      self._previous[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)


class Writer:
  """TensorBoard (clu) plus a metrics.jsonl line per write, both in the workdir."""

  def __init__(self, workdir: Path):
    self.tb = (metric_writers.SummaryWriter(str(workdir)) if jax.process_index() == 0
               else metric_writers.MultiWriter([]))
    self.jsonl = open(workdir / 'metrics.jsonl', 'a') if jax.process_index() == 0 else None

  def scalars(self, step: int, values: dict, prefix: str = '') -> None:
    values = {f'{prefix}{k}': float(v) for k, v in values.items()}
    self.tb.write_scalars(step, values)
    if self.jsonl:
      self.jsonl.write(json.dumps({'step': step, **values}) + '\n')
      self.jsonl.flush()

  def close(self) -> None:
    self.tb.close()
    if self.jsonl:
      self.jsonl.close()


def total_steps(config, train_size: int) -> int:
  """num_steps when given, else num_epochs passes over the training split."""
  if config.num_steps > 0:
    return config.num_steps
  if config.num_epochs <= 0:
    raise ValueError('Set --num_steps or --num_epochs to a positive number.')
  return config.num_epochs * max(1, train_size // config.batch_size)


def default_workdir(config) -> str:
  dataset = config.dataset.split(':')[-1].rstrip('/').split('/')[-1] or 'data'
  return f'runs/{config.model}_{config.encoder}_{config.image_size}_{dataset}'


def train_and_evaluate(config, workdir) -> dict:
  """Trains `config` in `workdir` (resuming from its checkpoint), returns the last evaluation."""
  models.validate(config)
  steps.validate(config)
  mesh = sharding.data_mesh()
  sharding.check_divisible(config.batch_size, mesh)
  sharding.check_divisible(config.eval_batch_size, mesh, 'eval_batch_size')
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mngr = checkpoints.manager(workdir, config)
  replicated = sharding.replicated(mesh)
  init = jax.jit(lambda k: steps.create_train_state(config, k), out_shardings=replicated)
  key = jax.random.PRNGKey(config.seed)

  start = mngr.latest_step()
  if start is not None:
    checkpoints.check_compatible(checkpoints.saved_config(mngr, start), config, str(workdir))
    state = checkpoints.restore_state(mngr, start, jax.eval_shape(init, key), replicated)
    log('Resumed from step %d in %s', start, workdir)
  else:
    start = 0
    state = init(key)
  checkpoints.write_json(workdir / 'config.json', config.to_dict())

  # A resumed run draws new shuffles and masks instead of replaying those of step 0.
  train_ds, skipped = input_pipeline.create_dataset(config, 'train', seed=config.seed + start)
  n_steps = total_steps(config, input_pipeline.num_examples(config, 'train'))
  data_key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), start)
  batches = input_pipeline.device_batches(train_ds, config, mesh, data_key)
  train_step = steps.make_train_step(config, mesh)
  eval_step = steps.make_eval_step(config)
  writer = Writer(workdir)
  results = {}

  def run_eval(step):
    res = evaluate.evaluate(state.eval_variables, config, mesh=mesh, max_examples=config.eval_examples,
                            eval_step=eval_step, grid_path=workdir / 'grids' / f'step_{step}.png')
    writer.scalars(step, res['model'], prefix='eval/')
    return res

  def save(step, metrics=None):
    checkpoints.save(mngr, state, config, metrics)
    log('Saved checkpoint %d', step)

  log('Training %s/%s for %d steps (batch %d on %d devices) in %s', config.model,
               config.encoder, n_steps, config.batch_size, mesh.devices.size, workdir)
  bar = tqdm.tqdm(total=n_steps, initial=start, unit='step', dynamic_ncols=True,
                  disable=jax.process_index() > 0 or not sys.stderr.isatty())
  last_good, tick, tick_step = start, time.perf_counter(), start
  try:
    with StopRequest() as stop:
      for step in range(start + 1, n_steps + 1):
        state, train_metrics = train_step(state, next(batches))
        bar.update()
        stopping = stop.signal is not None  # read once: a signal arriving later waits a step
        done = step == n_steps or stopping
        if step % config.log_every == 0 or done:
          values = jax.device_get(train_metrics)  # the only host sync between logs
          if not all(math.isfinite(float(v)) for v in values.values()):
            raise FloatingPointError(
                f'Training diverged at step {step} ({values}); the last good checkpoint is step '
                f'{last_good} in {workdir}. Lower --learning_rate, or use --dtype=float32.')
          now = time.perf_counter()
          values['images_per_sec'] = (step - tick_step) * config.batch_size / (now - tick)
          tick, tick_step = now, step
          writer.scalars(step, values, prefix='train/')
          bar.set_postfix(loss=f'{values["g_loss"]:.4f}', img_s=f'{values["images_per_sec"]:.0f}')
          if bar.disable:
            log('step %d/%d  %s', step, n_steps,
                '  '.join(f'{k}={v:.4g}' for k, v in values.items()))
        eval_now = step % config.eval_every == 0 or step == n_steps
        if eval_now:
          results = run_eval(step)
          log('eval at step %d: %s', step,
              '  '.join(f'{k}={v:.4g}' for k, v in results['model'].items()))
        if eval_now or step % config.checkpoint_every == 0 or done:
          save(step, {checkpoints.BEST_METRIC: results['model'][checkpoints.BEST_METRIC]}
               if eval_now else None)
          last_good = step
        if stopping:
          log('%s received: saved step %d, exiting; run again to resume.', stop.signal, step)
          break
  finally:
    bar.close()
    batches.close()
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  if skipped.count:
    log(skipped.report())
  return results


FLAGS = flags.FLAGS


def define_flags():
  """Flags of this command (defined only when it runs, so modules import each other freely)."""
  cli.define_config_flags()
  flags.DEFINE_string('workdir', None, 'Run directory (default: runs/MODEL_ENCODER_SIZE_DATASET).')


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax and clu are chatty at INFO
  if len(argv) > 1:
    sys.exit(f'train: unexpected arguments {argv[1:]}; flags look like --name=value.')
  try:
    config = cli.config_from_flags()
    models.validate(config)
    steps.validate(config)
  except ValueError as e:
    sys.exit(f'train: {e}')
  workdir = FLAGS.workdir or default_workdir(config)
  try:
    results = train_and_evaluate(config, workdir)
  except (ValueError, FloatingPointError) as e:
    sys.exit(f'train: {e}')
  if results:
    print(evaluate.format_table(results))
  grids = sorted(Path(workdir, 'grids').glob('step_*.png'), key=lambda p: int(p.stem[5:]))
  if grids:
    print(f'Inpaintings of the held-out photos: {grids[-1]}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
