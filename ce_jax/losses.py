"""Every loss of the project, defined once: masked L2, KL, adversarial, joint, and the report's.

Images and patches are in [-1, 1]; `patch_mask` is (B, h, h, 1) with 1 on the missing pixels.
"""

import jax
import jax.numpy as jnp


def overlap_weights(patch_mask, overlap: int, overlap_weight: float):
  """Per-pixel L2 weights over the patch: 1 on the hole, `overlap_weight` on the context pixels
  within `overlap` px of it (the original's 4-px, 10x border), 0 on the rest of the patch."""
  if overlap == 0:
    return patch_mask
  k = 2 * overlap + 1
  near = jax.lax.reduce_window(patch_mask, 0.0, jax.lax.max, (1, k, k, 1), (1, 1, 1, 1), 'SAME')
  return jnp.where(patch_mask > 0, 1.0, overlap_weight * near)


def masked_l2(pred, target, weights):
  """Mean over the patch (all pixels and channels) of weights * (pred - target)^2, as the
  original release's weighted-L2 matrix; `weights` broadcasts over channels."""
  return jnp.mean(weights * jnp.square(pred.astype(jnp.float32) - target))


def kl_divergence(mu, logvar):
  """KL(N(mu, exp(logvar)) || N(0, I)) per example, summed over the code: (B,)."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar, axis=-1)


def discriminator_loss(real_logits, fake_logits):
  """Binary cross-entropy of D: real patches -> 1, painted patches -> 0 (stable in the logits)."""
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def adversarial_loss(fake_logits):
  """The generator's non-saturating adversarial loss: -log D(G(x))."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def reconstruction_loss(pred, batch, config):
  """The overlap-weighted masked L2 of a predicted patch against the batch's true patch."""
  w = overlap_weights(batch['patch_mask'], config.mask.overlap, config.loss.overlap_weight)
  return masked_l2(pred, batch['target'], w)


def gan_generator_loss(pred, fake_logits, batch, config):
  """lambda_rec * masked L2 + lambda_adv * adversarial (0.999 / 0.001 in the original)."""
  rec = reconstruction_loss(pred, batch, config)
  adv = adversarial_loss(fake_logits)
  total = config.loss.rec_weight * rec + config.loss.adv_weight * adv
  return total, {'rec_loss': rec, 'adv_loss': adv}


def vae_loss(pred, mu, logvar, batch, config):
  """Negative ELBO per patch element: (sum of weighted squared error + kl_weight * KL) / n.

  The report's loss is ||x - D(z)||^2 + KL; dividing both by the n elements of a patch keeps
  the balance and puts the scale of the gradients beside the GAN's.
  """
  rec = reconstruction_loss(pred, batch, config)
  kl = jnp.mean(kl_divergence(mu, logvar))
  n = pred.shape[1] * pred.shape[2] * pred.shape[3]
  return rec + config.loss.kl_weight * kl / n, {'rec_loss': rec, 'kl': kl}


def report_loss(pred, target, patch_mask):
  """The reconstruction loss of the report's Tables 1-3: per image, the sum of squared errors
  over the hole in [-1, 1]: (B,)."""
  sq = jnp.square(pred.astype(jnp.float32) - target) * patch_mask
  return jnp.sum(sq, axis=(1, 2, 3))
