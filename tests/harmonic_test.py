"""The harmonic fill: exact on functions it must reproduce, the mean-of-neighbours property,
and the JAX batch fill (operator and conjugate gradients) against the exact sparse solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax import baselines, harmonic, masks
from conftest import tiny


def ramp(h=40, w=48):
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  return np.stack([0.01 * x + 0.02 * y - 0.5, 0.3 - 0.015 * x, 0.004 * y], -1)


def test_a_linear_ramp_is_filled_exactly():
  img = ramp()
  hole = np.zeros(img.shape[:2], bool)
  hole[10:30, 12:40] = True
  hole[5, 5] = True
  np.testing.assert_allclose(harmonic.fill_photo(img, hole), img, atol=1e-12)


def test_each_hole_pixel_is_the_mean_of_its_neighbours():
  rng = np.random.default_rng(0)
  img = rng.uniform(0, 1, (20, 24, 3))
  hole = rng.uniform(size=(20, 24)) < 0.3
  hole[0, :5] = True  # at the photo's edge: the mean of the neighbours that exist
  out = harmonic.fill_photo(img, hole)
  pad = np.pad(out, ((1, 1), (1, 1), (0, 0)))
  count = np.pad(np.ones((20, 24)), 1)
  total = pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:]
  n = (count[:-2, 1:-1] + count[2:, 1:-1] + count[1:-1, :-2] + count[1:-1, 2:])[..., None]
  np.testing.assert_allclose(out[hole], (total / n)[hole], atol=1e-10)
  np.testing.assert_array_equal(out[~hole], img[~hole])


def test_uint8_photos_come_back_uint8_and_untouched_outside_the_hole():
  rng = np.random.default_rng(1)
  photo = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
  hole = np.zeros((30, 30), bool)
  hole[8:20, 9:22] = True
  out = harmonic.fill_photo(photo, hole)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out[~hole], photo[~hole])
  exact = harmonic.fill_photo(photo.astype(np.float64), hole)
  assert np.abs(out.astype(np.float64) - exact).max() <= 0.5


@pytest.mark.parametrize('kind', ['center', 'block', 'freeform'])
def test_batch_fill_matches_the_exact_solve(kind):
  config = tiny(mask__kind=kind)
  images = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (4, 32, 32, 3)), jnp.float32)
  batch = masks.make_batch(images, jax.random.key(3), tiny(mask__kind=kind, prefill='harmonic'))
  exact = baselines.harmonic(batch)
  np.testing.assert_allclose(np.asarray(batch['masked']), exact, atol=2e-5)
  # The constant prefill is the original's: the hole set to the fill colour.
  plain = masks.make_batch(images, jax.random.key(3), config)
  np.testing.assert_array_equal(
      np.asarray(plain['masked']), np.asarray(masks.fill_hole(images, plain['mask'], config.fill))
  )


def test_conjugate_gradients_at_the_image_edge_match_the_exact_solve():
  images = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  region = np.zeros((2, 32, 32, 1), np.float32)
  region[0, :16, :16] = 1  # a patch box in the corner, no overlap: the photo's edge bounds it
  region[1, 16:, 5:21] = 1
  corner = jnp.asarray([[0, 0], [16, 5]], jnp.int32)
  out = np.asarray(harmonic.fill_batch(images, region, corner, 16))
  for i in range(2):
    exact = harmonic.fill_photo(np.asarray(images[i], np.float64), region[i, ..., 0] > 0)
    np.testing.assert_allclose(out[i], exact, atol=2e-5)


def test_unknown_prefill_is_refused():
  images = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match="prefill='zero'"):
    masks.make_batch(images, jax.random.key(0), tiny(prefill='zero'))
