"""Orbax checkpoints of a training run: save asynchronously, resume, restore the generator alone.

A checkpoint is a Composite of separate items, so evaluation and inpainting restore only the
generator's weights (no optimizer state, no discriminator):

  generator      {'params', 'batch_stats'}
  generator_ema  the moving average of the generator's params (when optim.ema_decay > 0)
  generator_opt  the generator's optimizer state
  discriminator  {'params', 'batch_stats', 'opt_state'} (GAN only)
  meta           {'step', 'rng'}
  config         the run's configuration, as JSON

The manager keeps the last `keep_checkpoints` steps and, beside them, the best step (the lowest
validation report loss). `save` refuses a state that holds NaN or Inf, and a step that cannot be
read back falls back to the previous one where the caller asked for 'latest'.
"""

import errno
import json
import logging as py_logging
import math
import os
from pathlib import Path
import shutil
import sys
import threading
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from ce_jax import configs, models, steps

# `load_generator`'s name for the model shipped inside the package (an export, see below).
PRETRAINED = 'pretrained'
PRETRAINED_DIR = Path(__file__).resolve().parent / 'pretrained'
EXPORT_CONFIG = 'export.json'  # an export: this file beside the generator's weights
EXPORT_WEIGHTS = 'generator'
# Fields that decide the shapes of the networks: a checkpoint only restores into the same ones.
ARCHITECTURE = (
    'model',
    'encoder',
    'bottleneck',
    'image_size',
    'hole_size',
    'gen_width',
    'disc_width',
    'skips',
    'upsample',
)
BEST_METRIC = 'report_loss'
# The items of a checkpoint (see the module docstring).
GENERATOR = 'generator'
GENERATOR_EMA = 'generator_ema'
GENERATOR_OPT = 'generator_opt'
DISCRIMINATOR = 'discriminator'
META = 'meta'
CONFIG = 'config'


def _best_metric(metrics) -> float:
  """The report loss of a step's metrics; a step saved without evaluation ranks last."""
  return float(metrics.get(BEST_METRIC, math.inf))


def _warn(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


class _Manager(ocp.CheckpointManager):
  """orbax's CheckpointManager, except that a step whose metrics file cannot be read (empty,
  garbled, not a JSON object) is a step without metrics, said in one warning, like any other
  unreadable item: it is not an error that blocks every command on the run."""

  def _get_metrics(self, step: int):
    try:
      metrics = super()._get_metrics(step)
      if metrics is None or (
          isinstance(metrics, dict)
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
      ):
        return metrics
      raise ValueError(f'not an object of numbers: {str(metrics)[:60]}')
    except (ValueError, OSError) as e:  # json.JSONDecodeError is a ValueError
      warned = self.__dict__.setdefault('_ce_warned_metrics', set())
      if step not in warned:
        warned.add(step)
        _warn(
            f'warning: the metrics file of checkpoint {step} in {self.directory} cannot be read '
            f'({_reason(e)}); its weights are used, but it is not ranked for --step=best.'
        )
      return None


class _QuietOrbaxErrors(py_logging.Filter):
  """Drops orbax's ERROR records (a failed save logs dozens of tracebacks from its threads) and
  asyncio's "exception was never retrieved" ones: every such failure reaches the caller as an
  exception, which the commands turn into one line."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno < py_logging.ERROR:
      return True
    path = record.pathname.replace(os.sep, '/')
    return not ('/orbax/' in path or record.name == 'asyncio' or '/asyncio/' in path)


_QUIET = _QuietOrbaxErrors()
_QUIET_LOCK = threading.Lock()


def _closed_loop_hook(previous):
  """sys.unraisablehook that drops the "Event loop is closed" errors of callbacks orbax's writer
  threads still deliver after a failed write (dozens of tracebacks), and passes on the rest."""

  def hook(unraisable):
    e = unraisable.exc_value
    if not (isinstance(e, RuntimeError) and str(e) == 'Event loop is closed'):
      previous(unraisable)

  hook.ce_jax_quiet = True
  return hook


def quiet_orbax_errors() -> None:
  """Installs `_QuietOrbaxErrors` on the loggers orbax and asyncio write to, and
  `_closed_loop_hook` (once)."""
  with _QUIET_LOCK:
    for name in ('absl', 'asyncio'):
      logger = py_logging.getLogger(name)
      if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)
    if not getattr(sys.unraisablehook, 'ce_jax_quiet', False):
      sys.unraisablehook = _closed_loop_hook(sys.unraisablehook)


def manager(workdir, config=None, *, read_only: bool = False) -> ocp.CheckpointManager:
  """The run's CheckpointManager over `workdir/checkpoints`."""
  quiet_orbax_errors()
  keep = config.keep_checkpoints if config is not None else 3
  options = ocp.CheckpointManagerOptions(
      read_only=read_only,
      create=not read_only,
      save_interval_steps=0 if read_only else 1,  # orbax warns when it has to set this itself
      # Orbax writes a step's metrics to disk only when best_fn is set: without it a resumed run
      # and `--step=best` see no metrics, and the best step is dropped after a restart.
      best_fn=_best_metric,
      best_mode='min',
      preservation_policy=policies.AnyPreservationPolicy(
          [
              policies.LatestN(n=keep),
              # BestN sorts by the metric (descending with reverse=True) and keeps the last n of
              # that order: reverse=True keeps the lowest report loss (orbax 0.12).
              policies.BestN(
                  get_metric_fn=_best_metric,
                  reverse=True,
                  n=1,
                  keep_checkpoints_without_metrics=False,
              ),
          ]
      ),
  )
  directory = Path(workdir).absolute() / 'checkpoints'
  if not read_only:
    return _Manager(directory, options=options)
  # Orbax warns that a read-only manager's directory is read-only: say nothing instead.
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    return _Manager(directory, options=options)
  finally:
    logging.set_verbosity(level)


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [
      jnp.all(jnp.isfinite(x))
      for x in jax.tree.leaves(tree)
      if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def is_finite(state: steps.TrainState) -> bool:
  """Whether every float of the state (parameters, statistics, EMA, optimizer states) is finite:
  one jitted reduction and one host sync."""
  return bool(_all_finite(state))


def _state_items(state: steps.TrainState) -> dict:
  """{item: tree} of a TrainState (or of its abstract shapes): what `save` writes and
  `restore_state` reads."""
  items = {
      GENERATOR: state.gen.variables,
      GENERATOR_OPT: state.gen.opt_state,
      META: {'step': state.step, 'rng': state.rng},
  }
  if state.gen_ema is not None:
    items[GENERATOR_EMA] = state.gen_ema
  if state.disc is not None:  # NetState's fields, by name
    items[DISCRIMINATOR] = {
        'params': state.disc.params,
        'batch_stats': state.disc.batch_stats,
        'opt_state': state.disc.opt_state,
    }
  return items


def save(mngr: ocp.CheckpointManager, state: steps.TrainState, config, metrics=None) -> None:
  """Starts an asynchronous save of `state` at its step (call mngr.wait_until_finished() to end).

  Raises FloatingPointError, saving nothing, when the state holds NaN or Inf: a diverged run
  must not bury its last good checkpoints under unusable ones.
  """
  if not is_finite(state):
    raise FloatingPointError(f'The state at step {int(state.step)} holds NaN or Inf; not saved.')
  items = {k: ocp.args.StandardSave(tree) for k, tree in _state_items(state).items()}
  items[CONFIG] = ocp.args.JsonSave(config.to_dict())
  # {} for a step without evaluation: orbax wants metrics on every save once best_fn is set.
  mngr.save(int(state.step), args=ocp.args.Composite(**items), metrics=metrics or {}, force=True)


class SaveError(OSError):
  """A checkpoint or an export that could not be written (its message is the one line a user
  reads); what was saved before it is kept."""


def _size(n: int | None) -> str:
  return 'an unknown amount' if n is None else f'{n / 2**20:.1f} MB'


def tree_bytes(tree) -> int:
  """Bytes of the arrays of `tree` (what a checkpoint of it holds, before compression)."""
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _free_bytes(path: Path) -> int | None:
  """Free bytes on the file system of `path` (or of its nearest existing parent)."""
  path = Path(path).absolute()
  for p in (path, *path.parents):
    if p.exists():
      try:
        return shutil.disk_usage(p).free
      except OSError:
        return None
  return None


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (an OSError, or tensorstore's error text) says the disk is full."""
  return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or (
      'No space left on device' in str(error) or "os_error_code='28'" in str(error)
  )


def write_failure(what: str, where, error: BaseException, needed: int | None) -> SaveError:
  """The one-line SaveError for `what` that could not be written to `where`."""
  free = _free_bytes(Path(where))
  cause = 'the disk is full' if is_disk_full(error) else _reason(error)
  return SaveError(
      f'{what} could not be written to {where} ({cause}); it needs about {_size(needed)}, '
      f'{_size(free)} free'
  )


def _remove_tree(path: Path) -> None:
  """Deletes a folder that a failed write's threads may still be finishing (a few tries)."""
  for _ in range(20):
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
      return
    time.sleep(0.1)


def remove_partial_save(mngr: ocp.CheckpointManager, step: int) -> None:
  """Deletes the temporary folder a failed save of `step` left (orbax's `N.orbax-checkpoint-tmp`);
  the committed checkpoints are untouched."""
  for tmp in Path(str(mngr.directory)).glob(f'{step}.orbax-checkpoint-tmp*'):
    _remove_tree(tmp)


def save_failed(mngr, step: int, error: BaseException, needed: int | None) -> SaveError:
  """Cleans up after a failed save of `step`; the SaveError to raise."""
  remove_partial_save(mngr, step)
  return write_failure(f'Checkpoint {step}', mngr.directory, error, needed)


def _merge(base: ml_collections.ConfigDict, saved: dict) -> None:
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(base.get(key), ml_collections.ConfigDict):
      _merge(base[key], value)
    else:
      with base.ignore_type():
        base[key] = tuple(value) if isinstance(value, list) else value


def saved_config(mngr: ocp.CheckpointManager, step: int) -> ml_collections.ConfigDict:
  """The configuration a checkpoint was trained with, over today's defaults (so that fields
  added since it was saved take their default values)."""
  restored = mngr.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))
  config = configs.get('default')
  _merge(config, restored[CONFIG])
  return config


class IncompatibleCheckpoint(ValueError):
  """A readable checkpoint of networks of another shape: no older step would fit either."""


def check_compatible(saved, config, where: str) -> None:
  """Refuses, in one line, to load a checkpoint into networks of another shape."""
  diff = [
      f'{k}={saved.get(k)} (asked: {config.get(k)})'
      for k in ARCHITECTURE
      if saved.get(k) != config.get(k)
  ]
  if diff:
    raise IncompatibleCheckpoint(
        f'The checkpoint in {where} was trained with {", ".join(diff)}; use another '
        f'--workdir, or the same settings to resume it.'
    )


def check_unchanged_networks(saved, config, where) -> None:
  """Refuses, in one line, --config overrides that would change the shapes of a trained model's
  networks (evaluate takes the checkpoint's config, and may only change the data and scoring)."""
  diff = [f'--config.{k}={config.get(k)}' for k in ARCHITECTURE if saved.get(k) != config.get(k)]
  if diff:
    trained = ', '.join(
        f'{k}={saved.get(k)}' for k in ARCHITECTURE if saved.get(k) != config.get(k)
    )
    raise ValueError(
        f'{" ".join(diff)}: the model in {where} was trained with {trained}, and its networks '
        'cannot change shape; leave the flag out.'
    )


def _abstract(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore_state(mngr, step: int, abstract_state: steps.TrainState, sharding) -> steps.TrainState:
  """Restores a whole TrainState (to resume training), laid out with `sharding`."""
  items = {
      k: ocp.args.StandardRestore(_abstract(tree, sharding))
      for k, tree in _state_items(abstract_state).items()
  }
  r = mngr.restore(step, args=ocp.args.Composite(**items))
  gen = steps.NetState(r[GENERATOR]['params'], r[GENERATOR]['batch_stats'], r[GENERATOR_OPT])
  disc = steps.NetState(**r[DISCRIMINATOR]) if DISCRIMINATOR in items else None
  return steps.TrainState(
      step=r[META]['step'],
      rng=r[META]['rng'],
      gen=gen,
      disc=disc,
      gen_ema=r[GENERATOR_EMA] if GENERATOR_EMA in items else None,
  )


def _reason(e: Exception) -> str:
  """The first line of an error, short enough for a one-line message."""
  text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  return text[:160]


def restore_with_fallback(mngr, step: int | str | None, restore_fn, warn=None):
  """Runs restore_fn(step) on the resolved step; returns (result, step used).

  When `step` is 'latest' (or None) and that checkpoint cannot be read (a truncated or missing
  file), warns in one line and tries the steps before it, newest first. A named step ('best', N)
  that cannot be read is a one-line ValueError naming the other saved steps.
  """
  warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
  chosen = resolve_step(mngr, step)
  saved = mngr.all_steps()
  latest = step in (None, 'latest', -1)
  candidates = [s for s in sorted(saved, reverse=True) if s <= chosen] if latest else [chosen]
  failures = []
  for s in candidates:
    try:
      return restore_fn(s), s
    except IncompatibleCheckpoint:  # not a damaged file
      raise
    except Exception as e:  # pylint: disable=broad-except  # Any damage: try the step before.
      failures.append((s, e))
    if latest and s != candidates[-1]:
      warn(
          f'warning: checkpoint {s} in {mngr.directory} cannot be read '
          f'({_reason(failures[-1][1])}); falling back to step {candidates[candidates.index(s) + 1]}.'
      )
  s, e = failures[-1]
  others = [x for x in saved if x not in [f[0] for f in failures]]
  if latest:
    raise ValueError(
        f'No readable checkpoint in {mngr.directory}: steps {[f[0] for f in failures]} '
        f'cannot be read ({_reason(failures[0][1])}).'
    )
  raise ValueError(
      f'Checkpoint {s} in {mngr.directory} cannot be read ({_reason(e)}); other saved '
      f'steps: {others or "none"}.'
  )


def resolve_step(mngr, step: int | str | None) -> int:
  """A checkpoint step from 'latest' / None, 'best', or a number; one-line error when absent."""
  steps_saved = mngr.all_steps()
  where = mngr.directory
  if not steps_saved:
    raise ValueError(
        f'No checkpoint in {where}; train first (python -m ce_jax.train --workdir=...).'
    )
  if step in (None, 'latest', -1):
    return steps_saved[-1]
  if step == 'best':
    scored = [
        (m[BEST_METRIC], s) for s in steps_saved if (m := mngr.metrics(s)) and BEST_METRIC in m
    ]
    return min(scored)[1] if scored else steps_saved[-1]
  try:
    step = int(step)
  except ValueError:
    raise ValueError(f"--step={step!r}: use 'latest', 'best' or a step number.") from None
  if step not in steps_saved:
    raise ValueError(f'No checkpoint at step {step} in {where}; saved steps: {steps_saved}.')
  return int(step)


def is_run(path) -> bool:
  """Whether `path` is a training run's directory (it holds checkpoints/)."""
  return (Path(path) / 'checkpoints').is_dir()


def check_export_target(out) -> Path:
  """The absolute --out of an export, or a one-line ValueError: an export may only create a new
  folder or replace an earlier export, never a file, a run or a folder of other files."""
  out = Path(out).absolute()
  if out.is_file() or (out.exists() and not out.is_dir()):
    raise ValueError(f'--out={out} is an existing file; name a new folder (or an earlier export).')
  if out.is_dir():
    if is_run(out):
      raise ValueError(
          f'--out={out} is a training run; an export there would hide its checkpoints. Name a '
          'new folder (e.g. --out=exported/).'
      )
    if not (out / EXPORT_CONFIG).is_file() and any(out.iterdir()):
      raise ValueError(
          f'--out={out} holds files that are not an export; name a new folder (or an earlier '
          'export, which is replaced).'
      )
  return out


def export_generator(out_dir, config, variables, step: int, dtype: str = 'float16') -> None:
  """Writes a generator alone, its weights stored as `dtype`, for `load_generator(out_dir)`:
  OUT/generator (orbax) and OUT/export.json (the run's config, step and storage dtype).

  OUT must be new, empty or an earlier export (`check_export_target`). The export is written to
  a hidden temporary folder inside OUT and moved in place only once complete (an earlier
  export's files are moved aside just before, and deleted just after), so a failed write (a
  full disk) keeps an earlier export as it was and leaves nothing behind.
  """
  out = check_export_target(out_dir)
  weights = jax.tree.map(lambda x: np.asarray(x).astype(dtype), jax.device_get(variables))
  meta = {'config': config.to_dict(), 'step': int(step), 'dtype': dtype}
  tmp, old = out / f'.export-tmp-{os.getpid()}', out / f'.export-old-{os.getpid()}'
  quiet_orbax_errors()
  try:
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
  except OSError as e:
    raise ValueError(f'--out={out}: cannot write there ({e.strerror}).') from None
  names = (EXPORT_CONFIG, EXPORT_WEIGHTS)  # export.json first out, last in
  moved, placed = [], []
  try:
    # A synchronous checkpointer: an error is raised here, not in a background thread.
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
      checkpointer.save(tmp / EXPORT_WEIGHTS, args=ocp.args.StandardSave(weights))
    write_json(tmp / EXPORT_CONFIG, meta)
    old.mkdir(exist_ok=True)
    for name in names:
      if (out / name).exists():
        (out / name).rename(old / name)
        moved.append(name)
    for name in reversed(names):
      (tmp / name).rename(out / name)
      placed.append(name)
  except Exception as e:  # pylint: disable=broad-except  # any failure: keep what was there
    for name in placed:
      shutil.rmtree(out / name, ignore_errors=True)
      (out / name).unlink(missing_ok=True)
    for name in moved:
      (old / name).rename(out / name)
    raise write_failure(f'The export of step {step}', out, e, tree_bytes(weights)) from None
  finally:
    _remove_tree(tmp)
    _remove_tree(old)


def _generator_shapes(config):
  """The generator's variables as ShapeDtypeStructs (no compute)."""
  return jax.eval_shape(lambda: steps.init_variables(config, jax.random.PRNGKey(0)))[0]


def _load_export(path: Path, step=None):
  """(config, variables, step) of an export; one-line ValueErrors for a damaged or edited one."""
  where = path / EXPORT_CONFIG
  try:
    meta = json.loads(where.read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f'{where} cannot be read ({_reason(e)}); export the run again.') from None
  if not (
      isinstance(meta, dict)
      and isinstance(meta.get('config'), dict)
      and isinstance(meta.get('step'), int)
      and meta.get('dtype') in ('float16', 'bfloat16', 'float32')
  ):
    raise ValueError(
        f'{where} is not an export\'s description (an object with "config", an integer "step" '
        'and "dtype" float16 | bfloat16 | float32); export the run again.'
    )
  if step not in (None, 'latest', 'best', -1) and str(step) != str(meta['step']):
    raise ValueError(
        f'{path} is an export of step {meta["step"]} alone; --step={step} does not apply '
        "(leave --step out, or pass the run's own folder)."
    )
  config = configs.get('default')
  try:
    _merge(config, meta['config'])
    models.validate(config)
    shapes = _generator_shapes(config)
  except Exception as e:  # pylint: disable=broad-except  # any edit that builds no network
    raise ValueError(f'{where} describes no network that can be built ({_reason(e)}).') from None
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, meta['dtype']), shapes)
  mismatch = f'The weights in {path / EXPORT_WEIGHTS} do not match the network {where} describes'
  try:
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
      weights = checkpointer.restore(path / EXPORT_WEIGHTS, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # pylint: disable=broad-except  # missing or damaged files
    raise ValueError(f'{mismatch}, or cannot be read ({_reason(e)}).') from None
  wrong = [
      jax.tree_util.keystr(k)
      for (k, w), a in zip(jax.tree_util.tree_leaves_with_path(weights), jax.tree.leaves(abstract))
      if w.shape != a.shape
  ]
  if wrong:  # orbax restores a stored array of another shape without a word
    raise ValueError(f'{mismatch} ({", ".join(wrong[:3])} have other shapes).')
  return config, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), weights), meta['step']


def load_generator(workdir, step=None):
  """Restores only the generator: returns (config, generator variables, step).

  `workdir` is a training run's directory (`step`: 'latest', 'best' or a number), an export of
  `export_generator`, or PRETRAINED: the model shipped in the package. The variables are the
  ones to evaluate: the EMA weights when the run kept them.
  """
  path = PRETRAINED_DIR if str(workdir) == PRETRAINED else Path(workdir)
  if (path / EXPORT_CONFIG).is_file() and not is_run(path):  # a run's checkpoints come first
    return _load_export(path.absolute(), step)
  if str(workdir) == PRETRAINED:
    raise ValueError(
        f'No pretrained model in {PRETRAINED_DIR}; this copy of ce_jax ships '
        'none. Pass --workdir of a trained run.'
    )
  mngr = manager(workdir, read_only=True)

  def restore(s):
    config = saved_config(mngr, s)
    gen_vars = _generator_shapes(config)
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    items = {GENERATOR: ocp.args.StandardRestore(_abstract(gen_vars, sharding))}
    ema = config.optim.ema_decay > 0
    if ema:
      items[GENERATOR_EMA] = ocp.args.StandardRestore(_abstract(gen_vars['params'], sharding))
    r = mngr.restore(s, args=ocp.args.Composite(**items))
    return config, steps.evaluation_variables(r[GENERATOR], r[GENERATOR_EMA] if ema else None)

  try:
    (config, variables), step = restore_with_fallback(mngr, step, restore)
  finally:
    mngr.close()
  return config, variables, step


def write_json(path, obj) -> None:
  Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True) + '\n')
