"""Orbax checkpoints of a training run: save asynchronously, resume, restore the generator alone.

A checkpoint is a Composite of separate items, so evaluation and inpainting restore only the
generator's weights (no optimizer state, no discriminator):

  generator      {'params', 'batch_stats'}
  generator_opt  the generator's optimizer state
  discriminator  {'params', 'batch_stats', 'opt_state'} (GAN only)
  meta           {'step', 'rng'}
  config         the run's configuration, as JSON

The manager keeps the last `keep_checkpoints` steps and, beside them, the best step by
validation report loss.
"""

import json
from pathlib import Path

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from ce_jax import configs, steps

# Fields that decide the shapes of the networks: a checkpoint only restores into the same ones.
ARCHITECTURE = ('model', 'encoder', 'bottleneck', 'image_size', 'hole_size', 'gen_width',
                'disc_width')
BEST_METRIC = 'report_loss'


def manager(workdir, config=None, *, read_only: bool = False) -> ocp.CheckpointManager:
  """The run's CheckpointManager over `workdir/checkpoints`."""
  keep = config.keep_checkpoints if config is not None else 3
  options = ocp.CheckpointManagerOptions(
      read_only=read_only,
      create=not read_only,
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(n=keep),
          policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                         keep_checkpoints_without_metrics=False),
      ]),
  )
  return ocp.CheckpointManager(Path(workdir).absolute() / 'checkpoints', options=options)


def save(mngr: ocp.CheckpointManager, state: steps.TrainState, config, metrics=None) -> None:
  """Starts an asynchronous save of `state` at its step (call mngr.wait_until_finished() to end)."""
  items = {
      'generator': ocp.args.StandardSave(state.gen.variables),
      'generator_opt': ocp.args.StandardSave(state.gen.opt_state),
      'meta': ocp.args.StandardSave({'step': state.step, 'rng': state.rng}),
      'config': ocp.args.JsonSave(config.to_dict()),
  }
  if state.disc is not None:
    items['discriminator'] = ocp.args.StandardSave(
        {'params': state.disc.params, 'batch_stats': state.disc.batch_stats,
         'opt_state': state.disc.opt_state})
  mngr.save(int(state.step), args=ocp.args.Composite(**items), metrics=metrics, force=True)


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
  restored = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  config = configs.get('default')
  _merge(config, restored['config'])
  return config


def check_compatible(saved, config, where: str) -> None:
  """Refuses, in one line, to load a checkpoint into networks of another shape."""
  diff = [f'{k}={saved.get(k)} (asked: {config.get(k)})' for k in ARCHITECTURE
          if saved.get(k) != config.get(k)]
  if diff:
    raise ValueError(f'The checkpoint in {where} was trained with {", ".join(diff)}; use another '
                     f'--workdir, or the same settings to resume it.')


def _abstract(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore_state(mngr, step: int, abstract_state: steps.TrainState, sharding) -> steps.TrainState:
  """Restores a whole TrainState (to resume training), laid out with `sharding`."""
  s = abstract_state
  items = {
      'generator': ocp.args.StandardRestore(_abstract(s.gen.variables, sharding)),
      'generator_opt': ocp.args.StandardRestore(_abstract(s.gen.opt_state, sharding)),
      'meta': ocp.args.StandardRestore(_abstract({'step': s.step, 'rng': s.rng}, sharding)),
  }
  if s.disc is not None:
    items['discriminator'] = ocp.args.StandardRestore(_abstract(
        {'params': s.disc.params, 'batch_stats': s.disc.batch_stats,
         'opt_state': s.disc.opt_state}, sharding))
  r = mngr.restore(step, args=ocp.args.Composite(**items))
  gen = steps.NetState(r['generator']['params'], r['generator']['batch_stats'], r['generator_opt'])
  disc = None
  if s.disc is not None:
    d = r['discriminator']
    disc = steps.NetState(d['params'], d['batch_stats'], d['opt_state'])
  return steps.TrainState(step=r['meta']['step'], rng=r['meta']['rng'], gen=gen, disc=disc)


def resolve_step(mngr, step: int | str | None) -> int:
  """A checkpoint step from 'latest' / None, 'best', or a number; one-line error when absent."""
  steps_saved = mngr.all_steps()
  where = mngr.directory
  if not steps_saved:
    raise ValueError(f'No checkpoint in {where}; train first (python -m ce_jax.train --workdir=...).')
  if step in (None, 'latest', -1):
    return steps_saved[-1]
  if step == 'best':
    scored = [(m[BEST_METRIC], s) for s in steps_saved
              if (m := mngr.metrics(s)) and BEST_METRIC in m]
    return min(scored)[1] if scored else steps_saved[-1]
  if int(step) not in steps_saved:
    raise ValueError(f'No checkpoint at step {step} in {where}; saved steps: {steps_saved}.')
  return int(step)


def load_generator(workdir, step=None):
  """Restores only the generator of a run: returns (config, generator variables, step)."""
  mngr = manager(workdir, read_only=True)
  step = resolve_step(mngr, step)
  config = saved_config(mngr, step)
  gen_vars, _ = jax.eval_shape(lambda: steps.init_variables(config, jax.random.PRNGKey(0)))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  r = mngr.restore(step, args=ocp.args.Composite(
      generator=ocp.args.StandardRestore(_abstract(gen_vars, sharding))))
  mngr.close()
  return config, r['generator'], step


def write_json(path, obj) -> None:
  Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True) + '\n')
