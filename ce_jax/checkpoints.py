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

import json
import math
from pathlib import Path
import sys

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from ce_jax import configs, steps

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


def manager(workdir, config=None, *, read_only: bool = False) -> ocp.CheckpointManager:
  """The run's CheckpointManager over `workdir/checkpoints`."""
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
    return ocp.CheckpointManager(directory, options=options)
  # Orbax warns that a read-only manager's directory is read-only: say nothing instead.
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    return ocp.CheckpointManager(directory, options=options)
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


def export_generator(out_dir, config, variables, step: int, dtype: str = 'float16') -> None:
  """Writes a generator alone, its weights stored as `dtype`, for `load_generator(out_dir)`:
  OUT/generator (orbax) and OUT/export.json (the run's config, step and storage dtype)."""
  out = Path(out_dir).absolute()
  weights = jax.tree.map(lambda x: np.asarray(x).astype(dtype), jax.device_get(variables))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(out / EXPORT_WEIGHTS, weights, force=True)
  write_json(out / EXPORT_CONFIG, {'config': config.to_dict(), 'step': int(step), 'dtype': dtype})


def _generator_shapes(config):
  """The generator's variables as ShapeDtypeStructs (no compute)."""
  return jax.eval_shape(lambda: steps.init_variables(config, jax.random.PRNGKey(0)))[0]


def _load_export(path: Path):
  meta = json.loads((path / EXPORT_CONFIG).read_text())
  config = configs.get('default')
  _merge(config, meta['config'])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, meta['dtype']), _generator_shapes(config)
  )
  with ocp.StandardCheckpointer() as checkpointer:
    weights = checkpointer.restore(path / EXPORT_WEIGHTS, abstract)
  return config, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), weights), meta['step']


def load_generator(workdir, step=None):
  """Restores only the generator: returns (config, generator variables, step).

  `workdir` is a training run's directory (`step`: 'latest', 'best' or a number), an export of
  `export_generator`, or PRETRAINED: the model shipped in the package. The variables are the
  ones to evaluate: the EMA weights when the run kept them.
  """
  path = PRETRAINED_DIR if str(workdir) == PRETRAINED else Path(workdir)
  if (path / EXPORT_CONFIG).is_file():
    return _load_export(path.absolute())
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
