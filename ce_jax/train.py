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
import threading
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
  """Turns SIGTERM / SIGINT into a flag the loop reads after every step, so that it saves and
  exits within a step of the signal. A second signal ends the process at once, without saving:
  a checkpoint is written to a temporary folder and renamed when complete, so the last good one
  stays as it was.

  A thread reads the signals from `signal.set_wakeup_fd`'s pipe, which the interpreter writes
  the moment one arrives: Python-level handlers run only when the main thread gets back to
  Python, which it does not while it waits for the device or for a checkpoint to be written.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal = None
    self.received = 0  # signals seen, over every `with` of this instance
    self._previous = {}
    self._wakeup = None
    self._write_fd = None

  def __enter__(self):
    for s in self.SIGNALS:
      self._previous[s] = signal.signal(s, self._handle)
    read_fd, self._write_fd = os.pipe()
    os.set_blocking(self._write_fd, False)
    self._wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
    threading.Thread(target=self._watch, args=(read_fd,), name='stop-request', daemon=True).start()
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = self.signal or signal.Signals(signum).name

  def _watch(self, read_fd: int) -> None:
    """Says that the first signal was received; ends the process on the second."""
    with os.fdopen(read_fd, 'rb', buffering=0) as pipe:
      while data := pipe.read(64):  # b'' once __exit__ closes the other end
        for signum in data:
          if signum not in self.SIGNALS:
            continue
          self.received += 1
          name = signal.Signals(signum).name
          if self.received == 1:
            self.signal = self.signal or name
            log(
                '%s received: stopping after this step, to save a checkpoint and exit '
                '(%s again exits at once, without saving).',
                name,
                'Ctrl-C' if signum == signal.SIGINT else name,
            )
          else:
            log('%s received again: exiting now, without saving.', name)
            os._exit(128 + signum)  # pylint: disable=protected-access

  def __exit__(self, *exc):
    signal.set_wakeup_fd(self._wakeup)
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    os.close(self._write_fd)


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


# A run counted in epochs trains at least this many steps: 25 epochs of the 40 bundled training
# photos would be 25 steps of batch 64, which teach a model nothing (1,000 are 64,000 crops).
MIN_EPOCH_STEPS = 1000


def total_steps(config, train_size: int) -> int:
  """num_steps when given, else num_epochs passes over the training split (at least
  MIN_EPOCH_STEPS steps)."""
  if config.num_steps > 0:
    return config.num_steps
  if config.num_epochs <= 0:
    raise ValueError('Set --num_steps or --num_epochs to a positive number.')
  return max(MIN_EPOCH_STEPS, config.num_epochs * max(1, train_size // config.batch_size))


def describe_run(config, n_steps: int, train_size: int, test_size: int, devices) -> list[str]:
  """What a run trains on, for how long and where, said before step 1 (one or more lines)."""
  where = f' in {config.data_dir}' if config.data_dir else ''
  source = {
      'samples': 'the photos bundled with ce_jax',
      'places365_small': f'Places365 (TFDS places365_small{where})',
  }.get(config.dataset, f'the images under {config.dataset.partition(":")[2]}')
  kinds = sorted({d.platform.upper() for d in devices})
  lines = [
      f'Training {config.model}/{config.encoder} ({config.image_size} px images, '
      f'{config.hole_size} px hole) on {source}: {train_size} training and {test_size} '
      f'held-out images; {n_steps} steps of batch {config.batch_size} '
      f'({n_steps * config.batch_size / max(train_size, 1):.4g} epochs) on {len(devices)} '
      f'{"/".join(kinds)} device{"s" if len(devices) > 1 else ""}.'
  ]
  if config.num_steps <= 0 and n_steps == MIN_EPOCH_STEPS:
    epoch_steps = config.num_epochs * max(1, train_size // config.batch_size)
    lines.append(
        f'({config.num_epochs} epochs of {train_size} images would be {epoch_steps} steps, too '
        f'few to learn from: {MIN_EPOCH_STEPS} steps, the least a run counted in epochs trains; '
        '--num_steps=N sets the length.)'
    )
  if config.dataset == 'samples':
    lines.append(
        'The bundled photos are a small demo set: train on yours with --dataset=folder:PATH, or '
        'on Places365 with --dataset=places365_small --data_dir=DIR; --config=demo trains a '
        'small model on the bundled photos in about a minute on a CPU.'
    )
  return lines


def _duration(seconds: float) -> str:
  """'45 s', '12 min', '3 h 05 min'."""
  if seconds < 90:
    return f'{seconds:.0f} s'
  if seconds < 90 * 60:
    return f'{seconds / 60:.0f} min'
  return f'{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min'


class Progress:
  """Seconds per step, measured from the end of the first step (which compiles) on, and the
  time left: said once after the first steps, then in every progress line."""

  def __init__(self, start: int, total: int):
    self.start, self.total = start, total
    self.t_begin = time.perf_counter()
    self.t_first = None  # when the first step (compile included) finished
    self.announced = False

  def step_done(self, step: int) -> None:
    now = time.perf_counter()
    if self.t_first is None:
      self.t_first = now
      return
    timed = step - self.start - 1
    if not self.announced and ((timed >= 3 and now - self.t_first >= 2) or timed >= 50):
      self.announced = True
      log(
          'Step %d took %.1f s (compiling), then %.3g s a step: the %d steps take about %s, '
          'until %s.',
          self.start + 1,
          self.t_first - self.t_begin,
          self.seconds_per_step(step),
          self.total - self.start,
          _duration(self.eta(step) + (self.t_first - self.t_begin) + (now - self.t_first)),
          self.finish(step),
      )

  def seconds_per_step(self, step: int) -> float | None:
    timed = step - self.start - 1
    if self.t_first is None or timed <= 0:
      return None
    return (time.perf_counter() - self.t_first) / timed

  def eta(self, step: int) -> float | None:
    per_step = self.seconds_per_step(step)
    return None if per_step is None else per_step * (self.total - step)

  def finish(self, step: int) -> str:
    return time.strftime('%H:%M', time.localtime(time.time() + (self.eta(step) or 0)))

  def line(self, step: int) -> str:
    """'step 50/1000 (5 %), ETA 38 min (19:12)'."""
    text = f'step {step}/{self.total} ({100 * step / self.total:.0f} %)'
    eta = self.eta(step)
    return text if eta is None else f'{text}, ETA {_duration(eta)} ({self.finish(step)})'


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
    saved = checkpoints.saved_config(mngr, step)
    checkpoints.check_compatible(saved, config, str(workdir))
    try:
      state = checkpoints.restore_state(mngr, step, abstract, replicated)
    except Exception:
      _check_optimizer(saved, step)
      raise
    if not checkpoints.is_finite(state):
      raise FloatingPointError('it holds NaN or Inf')
    return state

  def _check_optimizer(saved, step):
    """Says so in one line when other optim settings, not damage, keep `step` from restoring:
    some (clipping, the schedule, the EMA) change what the optimiser's state holds."""
    changed = [
        f'optim.{k}={saved.optim.get(k)} (asked: {v})'
        for k, v in config.optim.items()
        if saved.optim.get(k) != v
    ]
    if not changed:
      return
    as_saved = jax.eval_shape(lambda k: steps.create_train_state(saved, k), key)
    try:
      checkpoints.restore_state(mngr, step, as_saved, replicated)
    except Exception:  # pylint: disable=broad-except  # damaged after all: the caller says so
      return
    raise checkpoints.IncompatibleCheckpoint(
        f'The checkpoint in {workdir} was trained with {", ".join(changed)}, which changes what '
        "the optimiser's state holds; resume with the run's own optim settings, or use another "
        '--workdir.'
    )

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
    if start is None:
      # Wait for it: a device error (out of memory) is raised here, in one line from main(),
      # and not later by an array that is never computed (reading it would wait forever).
      state = jax.block_until_ready(init(key))
  except BaseException:
    mngr.close()
    raise
  if start is not None:
    mngr = _set_aside(mngr, workdir, start, config)
    log('Resumed from step %d in %s', start, workdir)
  else:
    start = 0
  last_saved = start if mngr.all_steps() else None  # a step whose checkpoint is finite
  if jax.process_index() == 0:
    checkpoints.write_json(workdir / 'config.json', config.to_dict())

  # Step s reads global batch s - 1 of one stream: a resumed run sees the images, crops and
  # masks the uninterrupted run would have seen.
  train_ds, skipped = input_pipeline.create_dataset(
      config, 'train', seed=config.seed, start_step=start
  )
  train_size = input_pipeline.num_examples(config, 'train')
  n_steps = total_steps(config, train_size)
  if start > n_steps:
    mngr.close()
    raise ValueError(
        f'{workdir} is at step {start} already, past the {n_steps} steps asked '
        '(--num_steps): nothing to train. Ask for more steps to train on, or use another '
        '--workdir.'
    )
  if start == n_steps:
    log('%s has trained its %d steps already: nothing to train.', workdir, n_steps)
  # The first evaluation comes after eval_every steps: check now that its split has a readable
  # image, rather than lose those steps to an empty or unreadable held-out split.
  input_pipeline.create_dataset(
      config, 'test', seed=config.seed, shuffle=False, repeat=False, augment=False
  )
  batches = input_pipeline.device_batches(
      train_ds, config, mesh, jax.random.PRNGKey(config.seed + 1), first_index=start, augment=True
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

  pending = None  # the step whose save is in flight (orbax writes in the background)

  def save(step, metrics=None):
    nonlocal pending
    commit()
    try:
      checkpoints.save(mngr, state, config, metrics)
    except FloatingPointError:
      raise diverged(f'by step {step}: its state holds NaN or Inf and was not saved') from None
    except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds
      raise save_failed(step, e) from None
    pending = step

  def commit():
    """Waits for the save in flight: says 'Saved' once it is committed, or raises SaveError."""
    nonlocal pending, last_saved
    if pending is None:
      return
    step, pending = pending, None
    try:
      mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds
      raise save_failed(step, e) from None
    last_saved = step
    log('Saved checkpoint %d', step)

  def save_failed(step, e) -> checkpoints.SaveError:
    """A failed save: its temporary folder removed, the last good checkpoint named."""
    error = checkpoints.save_failed(mngr, step, e, checkpoints.tree_bytes(state))
    good = f'step {last_saved}' if last_saved is not None else 'none yet'
    fix = 'free some space' if checkpoints.is_disk_full(e) else 'fix the cause'
    return checkpoints.SaveError(
        f'{error}. The last good checkpoint is {good} in {workdir}; {fix} and run the same '
        'command to resume.'
    )

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

  test_size = input_pipeline.num_examples(config, 'test')
  for line in describe_run(config, n_steps, train_size, test_size, mesh.devices.flat):
    log('%s', line)
  log('Run directory: %s (the same command resumes it).', workdir)
  bar = tqdm.tqdm(
      total=n_steps,
      initial=start,
      unit='step',
      dynamic_ncols=True,
      disable=jax.process_index() > 0 or not _shows_progress_bar(),
  )
  tick, tick_step = time.perf_counter(), start
  progress = Progress(start, n_steps)
  stop = StopRequest()
  try:
    with stop:
      for step in range(start + 1, n_steps + 1):
        state, train_metrics = train_step(state, next(batches))
        # One step in flight: wait for this step before dispatching the next (its batch is
        # prefetched meanwhile), so that a stop signal is acted on within a step, and the ETA
        # is measured on the device's time.
        jax.block_until_ready(train_metrics)
        progress.step_done(step)
        bar.update()
        stopping = _any_host(stop.signal is not None)  # a signal arriving later waits a step
        done = step == n_steps or stopping
        if step % config.log_every == 0 or done:
          values = jax.device_get(train_metrics)  # ready: waited for above
          if not all(math.isfinite(float(v)) for v in values.values()):
            raise diverged(f'at step {step} ({values})')
          now = time.perf_counter()
          values['images_per_sec'] = (step - tick_step) * config.batch_size / (now - tick)
          tick, tick_step = now, step
          writer.scalars(step, values, prefix='train/')
          bar.set_postfix(loss=f'{values["g_loss"]:.4f}', img_s=f'{values["images_per_sec"]:.0f}')
          if bar.disable:
            log(
                '%s  %s',
                progress.line(step),
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
        if pending is not None and not mngr.is_saving_in_progress():
          commit()  # 'Saved checkpoint N' once that save is committed, not when it starts
        if stopping:
          commit()
          log('%s received: saved step %d, exiting; run again to resume.', stop.signal, step)
          break
  except Exception as error:
    # An error in the loop (a failing evaluation, an input error) keeps the steps trained so
    # far: save the last finite state unless it is saved already.
    # (With several hosts the other hosts do not reach a save here: it would hang them.)
    if isinstance(error, (checkpoints.SaveError, jax.errors.JaxRuntimeError)):
      # Saving failed already, or the device failed: its arrays may never be computed, and
      # reading one (the state's step) would wait forever.
      raise
    done_step = int(state.step)
    unsaved = done_step != (last_saved or 0) and done_step not in mngr.all_steps()
    if unsaved and jax.process_count() == 1:
      try:
        if checkpoints.is_finite(state):
          save(done_step)
          commit()
          log('Saved step %d before stopping on the error below.', done_step)
      except Exception as e:  # pylint: disable=broad-except  # The original error matters more.
        log('Could not save step %d: %s', done_step, e)
    raise
  finally:
    bar.close()
    batches.close()
    failed = None
    with stop:  # a second signal while the last checkpoint is written exits at once
      try:
        commit()
      except checkpoints.SaveError as e:
        failed = e
    mngr.close()
    writer.close()
    if failed is not None:
      if sys.exc_info()[1] is None:  # no other error on its way out: this one is the error
        raise failed
      log('%s', failed)
  if skipped.count:
    log(skipped.report())
  return results


def out_of_memory(e: Exception) -> str:
  """The one line for a device that ran out of memory (XLA's RESOURCE_EXHAUSTED)."""
  reason = str(e).strip().splitlines()[0][:200]
  return (
      f'Out of memory on the device ({reason}). Lower --batch_size, --bottleneck, --gen_width or '
      '--image_size.'
  )


FLAGS = flags.FLAGS


def define_flags():
  """Flags of this command (defined only when it runs, so modules import each other freely)."""
  cli.define_config_flags()
  platform.define_flags()
  flags.DEFINE_string('workdir', None, 'Run directory (default: runs/MODEL_ENCODER_SIZE_DATASET).')
  for name in ('config', *cli.ALIASES):  # --help lists them (not only --helpfull)
    flags.declare_key_flag(name)


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
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    sys.exit(f'train: {out_of_memory(e)}')
  if results:
    print(evaluate.format_table(results))
  grids = sorted(Path(workdir, 'grids').glob('step_*.png'), key=lambda p: int(p.stem[5:]))
  if grids:
    print(f'Inpaintings of the held-out photos: {grids[-1]}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
