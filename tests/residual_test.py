"""The residual recipe: a generator that starts as the harmonic fill and paints in the frame
of the image's own statistics, and the photometric augmentation that shows it dark and grey
photos."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax import augment, baselines, masks, models, steps
from conftest import tiny


def residual_setup(seed=0):
  config = tiny(prefill='harmonic', residual=True, skips=True, upsample='nearest')
  images = jnp.asarray(np.random.default_rng(seed).uniform(-0.8, 0.8, (2, 32, 32, 3)), jnp.float32)
  batch = masks.make_batch(images, jax.random.key(seed), config)
  gen_vars, _ = steps.init_variables(config, jax.random.PRNGKey(seed))
  return config, batch, gen_vars


def test_at_initialisation_the_residual_model_is_the_harmonic_fill():
  config, batch, gen_vars = residual_setup()
  filled = steps.make_predict(config)(gen_vars, batch)
  np.testing.assert_allclose(np.asarray(filled), baselines.harmonic(batch), atol=2e-5)


def test_a_darker_lower_contrast_photo_gets_the_same_fill_darkened():
  config, batch, gen_vars = residual_setup(1)
  # Non-zero last layer: the network now paints a real correction.
  gen_vars = jax.tree_util.tree_map_with_path(
      lambda p, x: 0.05 * jnp.ones_like(x)
      if 'decoder' in str(p) and x.ndim == 4 and x.shape[-1] == 3
      else x,
      gen_vars,
  )
  predict = steps.make_predict(config)
  a, b = 0.4, -0.5  # darker and flatter, still above models.MIN_STD
  dark = masks.make_batch(a * batch['image'] + b, jax.random.key(1), config)
  base, darkened = predict(gen_vars, batch), predict(gen_vars, dark)
  hole = np.asarray(batch['mask'])[..., 0] > 0
  assert np.abs(np.asarray(base)[hole] - np.asarray(baselines.harmonic(batch))[hole]).max() > 1e-3
  np.testing.assert_allclose(np.asarray(darkened), a * np.asarray(base) + b, atol=1e-4)


def test_the_residual_generator_needs_the_mask():
  config, batch, gen_vars = residual_setup()
  gen, _ = models.create(config)
  with pytest.raises(ValueError, match='needs the mask'):
    gen.apply(gen_vars, batch['masked'])


def test_photometric_augmentation():
  images = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (64, 8, 8, 3)), jnp.float32)
  key = jax.random.key(3)
  np.testing.assert_array_equal(augment.photometric(images, key, 0.0), images)
  out = np.asarray(augment.photometric(images, key, 1.0))
  np.testing.assert_array_equal(out, np.asarray(augment.photometric(images, key, 1.0)))
  assert out.min() >= -1 and out.max() <= 1
  changed = np.abs(out - np.asarray(images)).max(axis=(1, 2, 3)) > 1e-3
  assert changed.all()
  grey = np.ptp(out, axis=-1).max(axis=(1, 2)) < 1e-5
  dark = out.mean(axis=(1, 2, 3)) < -0.6
  assert 0 < grey.sum() < 20 and 5 < dark.sum() < 40  # about a tenth grey, a quarter dark
  half = np.asarray(augment.photometric(images, key, 0.5))
  kept = (half == np.asarray(images)).all(axis=(1, 2, 3))
  assert 16 < kept.sum() < 48
