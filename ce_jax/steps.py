"""Training state and the pure, jitted, data-parallel steps: one GAN step, one VAE step, predict.

A step is written for one device's shard of the batch and mapped over the `data` mesh axis with
`jax.shard_map`. Each loss is the mean over the global batch (`lax.pmean` of the shard's loss),
so its gradient with respect to the replicated parameters — which shard_map's autodiff sums
over devices — is the global batch's gradient, whatever the number of devices. BatchNorm
averages its statistics over `data` too, so every device ends the step holding the same state:
the program `pmap` used to run, on a mesh that can span hosts.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from ce_jax import losses, masks, metrics, models
from ce_jax.sharding import DATA


@flax.struct.dataclass
class NetState:
  """One network's params, BatchNorm statistics and optimizer state."""

  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self):
    return {'params': self.params, 'batch_stats': self.batch_stats}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  rng: (
      jax.Array
  )  # raw uint32[2] key; the VAE's noise for step s, example i: fold_in(fold_in(rng, s), i)
  gen: NetState
  disc: NetState | None  # None for the VAE
  gen_ema: Any = None  # moving average of gen.params when optim.ema_decay > 0

  @property
  def eval_variables(self):
    return evaluation_variables(self.gen.variables, self.gen_ema)


def evaluation_variables(gen_variables, gen_ema=None):
  """The generator's variables to evaluate and ship: its EMA weights when the run kept them."""
  if gen_ema is None:
    return gen_variables
  return {'params': gen_ema, 'batch_stats': gen_variables['batch_stats']}


SCHEDULES = ('constant', 'cosine')


def learning_rate(config, peak: float) -> optax.Schedule | float:
  """`peak`, or (schedule='cosine') a linear warm-up to it and a cosine decay to 0 at num_steps."""
  o = config.optim
  if o.schedule == 'constant':
    return peak
  if o.schedule not in SCHEDULES:
    raise ValueError(f'optim.schedule={o.schedule!r}: use one of {", ".join(SCHEDULES)}.')
  if config.num_steps <= 0 or not 0 <= o.warmup_steps < config.num_steps:
    raise ValueError(
        f"optim.schedule='cosine' decays to zero at num_steps: set --num_steps "
        f'(> optim.warmup_steps={o.warmup_steps}).'
    )
  return optax.warmup_cosine_decay_schedule(0.0, peak, o.warmup_steps, config.num_steps)


def optimizers(config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """Adam for the generator (lr x gen_lr_mult) and the discriminator, optionally clipped."""
  o = config.optim

  def adam(lr):
    tx = optax.adam(learning_rate(config, lr), b1=o.b1, b2=o.b2)
    return optax.chain(optax.clip_by_global_norm(o.grad_clip), tx) if o.grad_clip > 0 else tx

  return adam(o.learning_rate * o.gen_lr_mult), adam(o.learning_rate)


def validate(config) -> None:
  """One-line errors for optimisation settings, before any step runs."""
  learning_rate(config, config.optim.learning_rate)
  if not 0.0 <= config.optim.ema_decay < 1.0:
    raise ValueError(f'optim.ema_decay={config.optim.ema_decay} must be in [0, 1) (0 = no EMA).')


def update_ema(ema, params, step, decay: float):
  """ema <- d * ema + (1 - d) * params, with d = min(decay, (1 + step) / (10 + step)) so that
  the average forgets its random start quickly."""
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)


def init_variables(config, key):
  """Fresh generator and discriminator variables (the discriminator's are None for the VAE)."""
  gen, disc = models.create(config)
  k_gen, k_disc = jax.random.split(key)
  image = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
  gen_vars = gen.init({'params': k_gen}, image, mask=image[..., :1])
  disc_vars = None
  if disc is not None:
    disc_vars = disc.init({'params': k_disc}, jnp.zeros((1, config.hole_size, config.hole_size, 3)))
  return gen_vars, disc_vars


def create_train_state(config, key) -> TrainState:
  """The state at step 0, built from `key` (call under jit with replicated out_shardings)."""
  k_init, k_rng = jax.random.split(key)
  gen_vars, disc_vars = init_variables(config, k_init)
  tx_gen, tx_disc = optimizers(config)

  def net(v, tx):
    return NetState(v['params'], v.get('batch_stats', {}), tx.init(v['params']))

  return TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=k_rng,
      gen=net(gen_vars, tx_gen),
      disc=None if disc_vars is None else net(disc_vars, tx_disc),
      gen_ema=gen_vars['params'] if config.optim.ema_decay > 0 else None,
  )


def _finish(state: TrainState, gen: NetState, config, **changes) -> TrainState:
  """The state after a step: new generator (and its EMA), step + 1."""
  ema = state.gen_ema
  if ema is not None:
    ema = update_ema(ema, gen.params, state.step, config.optim.ema_decay)
  return state.replace(step=state.step + 1, gen=gen, gen_ema=ema, **changes)


def _update(net: NetState, grads, batch_stats, tx) -> NetState:
  updates, opt_state = tx.update(grads, net.opt_state, net.params)
  return NetState(optax.apply_updates(net.params, updates), batch_stats, opt_state)


def gan_step(state: TrainState, batch, *, config):
  """Discriminator update, then generator update, as the original release.

  The generator runs forward once; its painted patches feed the discriminator's update and,
  through the vjp, the generator's own gradient (against the freshly updated discriminator).
  With loss.adv_weight = 0 the discriminator plays no part: the step is the generator's masked
  L2 alone (the original's reconstruction-only ablation), at half the cost.
  """
  gen, disc = models.create(config, train=True, axis_name=DATA)
  tx_gen, tx_disc = optimizers(config)

  def generate(params):
    (pred, _), upd = gen.apply(
        {'params': params, 'batch_stats': state.gen.batch_stats},
        batch['masked'],
        corner=batch['box'],
        mask=batch.get('mask'),  # a residual generator's 4th channel (train_keys)
        mutable=['batch_stats'],
    )
    return pred, upd['batch_stats']

  pred, gen_vjp, gen_stats = jax.vjp(generate, state.gen.params, has_aux=True)
  if config.loss.adv_weight == 0:
    rec_loss = lambda p: jax.lax.pmean(losses.reconstruction_loss(p, batch, config), DATA)
    rec, d_pred = jax.value_and_grad(rec_loss)(pred)
    (g_grads,) = gen_vjp(config.loss.rec_weight * d_pred)
    new_gen = _update(state.gen, g_grads, gen_stats, tx_gen)
    m = {'g_loss': config.loss.rec_weight * rec, 'rec_loss': rec}
    return _finish(state, new_gen, config), m

  def disc_apply(params, stats, patch):
    logits, upd = disc.apply(
        {'params': params, 'batch_stats': stats}, patch, mutable=['batch_stats']
    )
    return logits, upd['batch_stats']

  def disc_loss_fn(params):
    real, stats = disc_apply(params, state.disc.batch_stats, batch['target'])
    fake, stats = disc_apply(params, stats, jax.lax.stop_gradient(pred))
    return jax.lax.pmean(losses.discriminator_loss(real, fake), DATA), (stats, real, fake)

  (d_loss, (d_stats, real, fake)), d_grads = jax.value_and_grad(disc_loss_fn, has_aux=True)(
      state.disc.params
  )
  new_disc = _update(state.disc, d_grads, d_stats, tx_disc)

  def gen_loss_fn(patch):
    fake_logits, stats = disc_apply(new_disc.params, new_disc.batch_stats, patch)
    total, parts = losses.gan_generator_loss(patch, fake_logits, batch, config)
    return jax.lax.pmean(total, DATA), (stats, parts)

  (g_loss, (d_stats, parts)), d_pred = jax.value_and_grad(gen_loss_fn, has_aux=True)(pred)
  (g_grads,) = gen_vjp(d_pred)
  new_gen = _update(state.gen, g_grads, gen_stats, tx_gen)
  new_disc = new_disc.replace(batch_stats=d_stats)

  m = {
      'g_loss': g_loss,
      'd_loss': d_loss,
      **parts,
      'd_real': jnp.mean(jax.nn.sigmoid(real)),
      'd_fake': jnp.mean(jax.nn.sigmoid(fake)),
  }
  return _finish(state, new_gen, config, disc=new_disc), jax.lax.pmean(m, DATA)


def example_keys(rng, step, local_batch: int):
  """One key per example of this device's shard: fold_in(fold_in(rng, step), global index).

  Folding in the example's position in the global batch (device index x shard size + row)
  gives every example its own noise, the same however many devices share the batch.
  """
  first = jax.lax.axis_index(DATA) * local_batch
  step_key = jax.random.fold_in(rng, step)
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(first + jnp.arange(local_batch))


def vae_step(state: TrainState, batch, *, config):
  """Masked L2 + KL, with z = mu + sigma * eps and eps from keys folded with step and example."""
  gen, _ = models.create(config, train=True, axis_name=DATA)
  tx_gen, _ = optimizers(config)
  key = example_keys(state.rng, state.step, batch['masked'].shape[0])

  def loss_fn(params):
    (pred, extras), upd = gen.apply(
        {'params': params, 'batch_stats': state.gen.batch_stats},
        batch['masked'],
        key,
        corner=batch['box'],
        mask=batch.get('mask'),  # a residual generator's 4th channel (train_keys)
        mutable=['batch_stats'],
    )
    loss, parts = losses.vae_loss(pred, extras['mu'], extras['logvar'], batch, config)
    return jax.lax.pmean(loss, DATA), (upd['batch_stats'], parts)

  (loss, (stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.gen.params)
  new_gen = _update(state.gen, grads, stats, tx_gen)
  m = {'g_loss': loss, **parts}
  return _finish(state, new_gen, config), jax.lax.pmean(m, DATA)


TRAIN_KEYS = ('masked', 'box', 'target', 'patch_mask')  # what a train step reads of a batch


def train_keys(config) -> tuple[str, ...]:
  """What a train step reads of a batch: the mask too for a residual generator."""
  return TRAIN_KEYS + (('mask',) if config.residual else ())


def make_train_step(config, mesh):
  """jit(shard_map(step)) over `mesh`: state replicated, batch split on `data`, state donated."""
  step = {'gan': gan_step, 'vae': vae_step}[config.model]
  mapped = jax.shard_map(
      functools.partial(step, config=config),
      mesh=mesh,
      in_specs=(P(), P(DATA)),
      out_specs=(P(), P()),
  )

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, batch):
    return mapped(state, {k: batch[k] for k in train_keys(config)})

  return train_step


def make_predict(config):
  """jit'd (gen_variables, batch) -> filled images (B, H, W, 3): the generator in inference mode
  (running BatchNorm statistics, z = mu) paints each patch, pasted back into the hole."""
  gen, _ = models.create(config)

  @jax.jit
  def predict(gen_variables, batch):
    patch, _ = gen.apply(gen_variables, batch['masked'], corner=batch['box'], mask=batch['mask'])
    return masks.paste(batch['image'], patch, batch['box'], batch['mask'])

  return predict


def make_eval_step(config):
  """jit'd (gen_variables, batch) -> (filled images, per-image metrics)."""
  predict = make_predict(config)

  @jax.jit
  def eval_step(gen_variables, batch):
    filled = predict(gen_variables, batch)
    return filled, metrics.per_image(filled, batch)

  return eval_step
