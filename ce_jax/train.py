"""Trains a context encoder on every device: the training loop, in one readable place.

  python -m ce_jax.train --model=gan --encoder=alexnet              # bundled sample photos
  python -m ce_jax.train --config=paper --model=vae --encoder=vgg --data_dir=DIR
  python -m ce_jax.train --config=demo --workdir=runs/demo         # again: resumes where it stopped

A workdir that holds a checkpoint is resumed; SIGTERM / SIGINT (Ctrl-C) save one and exit.
The workdir gets TensorBoard events, metrics.jsonl, checkpoints/ and grids/step_N.png.

Nothing is lost: one trainer at a time holds a workdir (train.lock); every setting is checked
before step 1; a state holding NaN or Inf is never saved; a checkpoint that cannot be read is
moved to unreadable_checkpoints/ and training resumes from the one before it; and an error in
the loop (a failing evaluation) saves the last step before it ends the run.
"""

import contextlib
import fcntl
import json
import math
import os
from pathlib import Path
import signal
import sys
import time

from absl import app, flags, logging
import jax
import numpy as np
from PIL import Image
from tqdm import auto as tqdm

from ce_jax import checkpoints, cli, evaluate, input_pipeline, models, platform, sharding, steps


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
  """metrics.jsonl lines and TensorBoard events (scalars and the evaluation grids) in the workdir,
  from the first host. TensorBoard needs TensorFlow (clu writes through tf.summary): without it,
  metrics.jsonl and grids/*.png alone, said once."""

  def __init__(self, workdir: Path):
    self.tb = self.jsonl = None
    if jax.process_index() > 0:
      return
    self.jsonl = open(workdir / 'metrics.jsonl', 'a')
    try:
      from clu import metric_writers  # pylint: disable=g-import-not-at-top  # imports TensorFlow
    except ImportError:
      log(
          'No TensorBoard events without TensorFlow (pip install "ce_jax[tf]"); '
          'metrics go to metrics.jsonl.'
      )
    else:
      self.tb = metric_writers.SummaryWriter(str(workdir))

  def scalars(self, step: int, values: dict, prefix: str = '') -> None:
    values = {f'{prefix}{k}': float(v) for k, v in values.items()}
    if self.tb:
      self.tb.write_scalars(step, values)
    if self.jsonl:
      self.jsonl.write(json.dumps({'step': step, **values}) + '\n')
      self.jsonl.flush()

  def image(self, step: int, name: str, png: Path) -> None:
    """A PNG (an evaluation's grid) as a TensorBoard image."""
    if self.tb and png.exists():
      self.tb.write_images(step, {name: np.asarray(Image.open(png).convert('RGB'))[None]})

  def close(self) -> None:
    for f in (self.tb, self.jsonl):
      if f:
        f.close()


class WorkdirLock:
  """An exclusive flock on WORKDIR/train.lock, held while training: a second trainer on the same
  workdir is refused, and the kernel frees the lock when its owner exits or is killed."""

  NAME = 'train.lock'

  def __init__(self, workdir):
    self.path = Path(workdir) / self.NAME
    self.fd = None

  def __enter__(self):
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      owner = os.read(fd, 32).decode(errors='replace').strip() or 'unknown'
      os.close(fd)
      raise ValueError(
          f'{self.path.parent} is in use by another training process (pid {owner}); '
          'wait for it to end or stop it, or use another --workdir.'
      ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f'{os.getpid()}\n'.encode())
    self.fd = fd
    return self

  def __exit__(self, *exc):
    if self.fd is not None:
      os.close(self.fd)  # releases the lock; the file stays (removing it would race a new owner)
      self.fd = None


def _any_host(flag: bool) -> bool:
  """Whether `flag` is true on any host: every host must stop (and save) at the same step."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def _shows_progress_bar() -> bool:
  """A terminal or a notebook (whose stderr is no terminal, but which draws tqdm.auto's bar)."""
  return sys.stderr.isatty() or 'ipykernel' in sys.modules


POSITIVE_FIELDS = (
    'log_every',
    'eval_every',
    'checkpoint_every',
    'gen_width',
    'disc_width',
    'keep_checkpoints',
    'grid_images',
)


def validate(config) -> None:
  """One-line errors for every setting of a run, before step 1 (so that no setting can fail a
  run after hours of training)."""
  models.validate(config)
  steps.validate(config)
  input_pipeline.validate(config)
  for field in POSITIVE_FIELDS:
    value = config[field]
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f'{field}={value!r} must be a positive integer.')
  if not config.optim.grad_clip >= 0:
    raise ValueError(f'optim.grad_clip={config.optim.grad_clip} must be >= 0 (0 = no clipping).')
  if not (math.isfinite(config.optim.learning_rate) and config.optim.learning_rate > 0):
    raise ValueError(f'learning_rate={config.optim.learning_rate} must be a positive number.')


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
  validate(config)
  mesh = sharding.data_mesh()
  sharding.check_divisible(config.batch_size, mesh)
  sharding.check_divisible(config.eval_batch_size, mesh, 'eval_batch_size')
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    return _train(config, workdir, mesh)


def _resume(mngr, workdir: Path, config, init, key, replicated):
  """(state, step) of the newest readable, finite checkpoint, or (None, None) when none exists.

  A newer checkpoint that cannot be read (or holds NaN) is moved to unreadable_checkpoints/, out
  of the way of the steps that will be saved again, and not deleted.
  """
  if mngr.latest_step() is None:
    return None, None
  abstract = jax.eval_shape(init, key)

  def restore(step):
    checkpoints.check_compatible(checkpoints.saved_config(mngr, step), config, str(workdir))
    state = checkpoints.restore_state(mngr, step, abstract, replicated)
    if not checkpoints.is_finite(state):
      raise FloatingPointError('it holds NaN or Inf')
    return state

  state, start = checkpoints.restore_with_fallback(mngr, 'latest', restore, warn=log)
  return state, start


def _set_aside(mngr, workdir: Path, start: int, config):
  """Moves the checkpoints newer than `start` (unreadable) out of checkpoints/; a new manager."""
  newer = [s for s in mngr.all_steps() if s > start]
  if not newer:
    return mngr
  mngr.close()
  if jax.process_index() == 0:
    aside = workdir / 'unreadable_checkpoints'
    aside.mkdir(exist_ok=True)
    for s in newer:
      target = aside / f'{s}_{time.strftime("%Y%m%d-%H%M%S")}'
      (Path(mngr.directory) / str(s)).rename(target)
      log('Moved unreadable checkpoint %d to %s', s, target)
  if jax.process_count() > 1:  # every host sees the move before it lists the steps again
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices('unreadable checkpoints set aside')
  return checkpoints.manager(workdir, config)


def _train(config, workdir: Path, mesh) -> dict:
  """train_and_evaluate's body, run while holding the workdir's lock."""
  mngr = checkpoints.manager(workdir, config)
  replicated = sharding.replicated(mesh)
  init = jax.jit(lambda k: steps.create_train_state(config, k), out_shardings=replicated)
  key = jax.random.PRNGKey(config.seed)

  try:
    state, start = _resume(mngr, workdir, config, init, key, replicated)
  except BaseException:
    mngr.close()
    raise
  if start is not None:
    mngr = _set_aside(mngr, workdir, start, config)
    log('Resumed from step %d in %s', start, workdir)
  else:
    start = 0
    state = init(key)
  last_saved = start if mngr.all_steps() else None  # a step whose checkpoint is finite
  if jax.process_index() == 0:
    checkpoints.write_json(workdir / 'config.json', config.to_dict())

  # Step s reads global batch s - 1 of one stream: a resumed run sees the images, crops and
  # masks the uninterrupted run would have seen.
  train_ds, skipped = input_pipeline.create_dataset(
      config, 'train', seed=config.seed, start_step=start
  )
  n_steps = total_steps(config, input_pipeline.num_examples(config, 'train'))
  # The first evaluation comes after eval_every steps: check now that its split has a readable
  # image, rather than lose those steps to an empty or unreadable held-out split.
  input_pipeline.create_dataset(
      config, 'test', seed=config.seed, shuffle=False, repeat=False, augment=False
  )
  batches = input_pipeline.device_batches(
      train_ds, config, mesh, jax.random.PRNGKey(config.seed + 1), first_index=start
  )
  train_step = steps.make_train_step(config, mesh)
  eval_step = steps.make_eval_step(config)
  writer = Writer(workdir)
  results = {}

  def run_eval(step):
    grid = workdir / 'grids' / f'step_{step}.png'
    res = evaluate.evaluate(
        state.eval_variables,
        config,
        mesh=mesh,
        max_examples=config.eval_examples,
        eval_step=eval_step,
        grid_path=grid,
    )
    writer.scalars(step, res['model'], prefix='eval/')
    writer.image(step, 'eval/inpaintings', grid)
    return res

  def save(step, metrics=None):
    nonlocal last_saved
    try:
      checkpoints.save(mngr, state, config, metrics)
    except FloatingPointError:
      raise diverged(f'by step {step}: its state holds NaN or Inf and was not saved') from None
    last_saved = step
    log('Saved checkpoint %d', step)

  def diverged(what: str) -> FloatingPointError:
    good = (
        f'the last good checkpoint is step {last_saved}'
        if last_saved is not None
        else 'no checkpoint was saved'
    )
    return FloatingPointError(
        f'Training diverged {what}; {good} in {workdir}. Lower '
        '--learning_rate, or use --dtype=float32.'
    )

  log(
      'Training %s/%s for %d steps (batch %d on %d devices) in %s',
      config.model,
      config.encoder,
      n_steps,
      config.batch_size,
      mesh.devices.size,
      workdir,
  )
  bar = tqdm.tqdm(
      total=n_steps,
      initial=start,
      unit='step',
      dynamic_ncols=True,
      disable=jax.process_index() > 0 or not _shows_progress_bar(),
  )
  tick, tick_step = time.perf_counter(), start
  try:
    with StopRequest() as stop:
      for step in range(start + 1, n_steps + 1):
        state, train_metrics = train_step(state, next(batches))
        bar.update()
        stopping = _any_host(stop.signal is not None)  # a signal arriving later waits a step
        done = step == n_steps or stopping
        if step % config.log_every == 0 or done:
          values = jax.device_get(train_metrics)  # the only host sync between logs
          if not all(math.isfinite(float(v)) for v in values.values()):
            raise diverged(f'at step {step} ({values})')
          now = time.perf_counter()
          values['images_per_sec'] = (step - tick_step) * config.batch_size / (now - tick)
          tick, tick_step = now, step
          writer.scalars(step, values, prefix='train/')
          bar.set_postfix(loss=f'{values["g_loss"]:.4f}', img_s=f'{values["images_per_sec"]:.0f}')
          if bar.disable:
            log(
                'step %d/%d  %s',
                step,
                n_steps,
                '  '.join(f'{k}={v:.4g}' for k, v in values.items()),
            )
        eval_now = step % config.eval_every == 0 or step == n_steps
        if eval_now:
          results = run_eval(step)
          log(
              'eval at step %d: %s',
              step,
              '  '.join(f'{k}={v:.4g}' for k, v in results['model'].items()),
          )
        if eval_now or step % config.checkpoint_every == 0 or done:
          save(
              step,
              {checkpoints.BEST_METRIC: results['model'][checkpoints.BEST_METRIC]}
              if eval_now
              else None,
          )
        if stopping:
          log('%s received: saved step %d, exiting; run again to resume.', stop.signal, step)
          break
  except Exception:
    # An error in the loop (a failing evaluation, an input error) keeps the steps trained so
    # far: save the last finite state unless it is saved already.
    # (With several hosts the other hosts do not reach a save here: it would hang them.)
    done_step = int(state.step)
    unsaved = done_step != (last_saved or 0) and done_step not in mngr.all_steps()
    if unsaved and jax.process_count() == 1:
      try:
        if checkpoints.is_finite(state):
          save(done_step)
          log('Saved step %d before stopping on the error below.', done_step)
      except Exception as e:  # pylint: disable=broad-except  # The original error matters more.
        log('Could not save step %d: %s', done_step, e)
    raise
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
  platform.define_flags()
  flags.DEFINE_string('workdir', None, 'Run directory (default: runs/MODEL_ENCODER_SIZE_DATASET).')


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax and clu are chatty at INFO
  if len(argv) > 1:
    sys.exit(f'train: unexpected arguments {argv[1:]}; flags look like --name=value.')
  try:
    config = cli.config_from_flags()
    validate(config)
    platform.setup_from_flags()
  except ValueError as e:
    sys.exit(f'train: {e}')
  workdir = FLAGS.workdir or default_workdir(config)
  try:
    results = train_and_evaluate(config, workdir)
  except (ValueError, FloatingPointError, OSError) as e:
    sys.exit(f'train: {e}')
  if results:
    print(evaluate.format_table(results))
  grids = sorted(Path(workdir, 'grids').glob('step_*.png'), key=lambda p: int(p.stem[5:]))
  if grids:
    print(f'Inpaintings of the held-out photos: {grids[-1]}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
