"""Photometric augmentation of training images: fills that follow the context's light.

Nothing in a photo collection shows a network many dark, washed-out or grey scenes; this
makes them. Each image, with probability `config.photometric`, gets a random gamma, contrast,
saturation and brightness (a quarter of those are made dark, a tenth grey), drawn from a key,
so batch s is the same on every resume and every host.
"""

import jax
import jax.numpy as jnp
import numpy as np

GREY = np.asarray([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma (no JAX at import)


def photometric(images, key, probability: float):
  """(B, H, W, 3) images in [-1, 1], a share `probability` of them changed (see module doc)."""
  if probability <= 0:
    return images
  b = images.shape[0]
  k = jax.random.split(key, 7)
  u = lambda i, lo, hi: jax.random.uniform(k[i], (b, 1, 1, 1), minval=lo, maxval=hi)
  x = (images + 1.0) / 2.0
  gamma = jnp.exp(u(0, -0.6, 0.6))
  x = x**gamma
  luma = jnp.sum(x * GREY, -1, keepdims=True)
  saturation = jnp.where(u(1, 0, 1) < 0.1, 0.0, u(2, 0.4, 1.4))
  x = luma + saturation * (x - luma)
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  x = mean + u(3, 0.35, 1.25) * (x - mean)
  brightness = jnp.where(u(4, 0, 1) < 0.25, u(5, 0.1, 0.4), u(5, 0.7, 1.2))
  x = jnp.clip(x * brightness, 0.0, 1.0)
  apply = jax.random.uniform(k[6], (b, 1, 1, 1)) < probability
  return jnp.where(apply, 2.0 * x - 1.0, images).astype(images.dtype)


def _dark(x):
  return 0.25 * x


def _low_contrast(x):
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return mean + 0.3 * (x - mean)


def _grey(x):
  return jnp.broadcast_to(jnp.sum(x * GREY, -1, keepdims=True), x.shape)


# The robustness sets: held-out photos made dark (25 % brightness), flat (30 % contrast around
# their mean) or grey (BT.601 luma), as `evaluate --transform=NAME` scores them.
TRANSFORMS = {'dark': _dark, 'low_contrast': _low_contrast, 'grey': _grey}


def transform(images, name: str):
  """(B, H, W, 3) images in [-1, 1] through the named TRANSFORMS entry (in [0, 1] light)."""
  if name not in TRANSFORMS:
    raise ValueError(f'transform={name!r}: use one of {", ".join(TRANSFORMS)}.')
  return (2.0 * TRANSFORMS[name]((images + 1.0) / 2.0) - 1.0).astype(images.dtype)
