"""Tests of every loss against NumPy float64 references."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax import losses, masks
from conftest import preset, tiny

RNG = np.random.default_rng(0)


def rand(*shape, lo=-1.0, hi=1.0):
  return RNG.uniform(lo, hi, shape).astype(np.float32)


def centre_patch_mask(hole, overlap, batch=1):
  m = np.zeros((batch, hole, hole, 1), np.float32)
  m[:, overlap : hole - overlap, overlap : hole - overlap] = 1
  return m


def np_dilate(mask, r):
  """Max over the (2r+1)x(2r+1) window around each pixel (zero outside), float64."""
  b, h, w, c = mask.shape
  padded = np.zeros((b, h + 2 * r, w + 2 * r, c))
  padded[:, r : r + h, r : r + w] = mask
  out = np.zeros((b, h, w, c))
  for dy in range(2 * r + 1):
    for dx in range(2 * r + 1):
      out = np.maximum(out, padded[:, dy : dy + h, dx : dx + w])
  return out


def np_overlap_weights(mask, overlap, weight):
  if overlap == 0:
    return mask.astype(np.float64)
  return np.where(mask > 0, 1.0, weight * np_dilate(mask, overlap))


# ------------------------------------------------------------------------------ masked L2


def test_masked_l2_matches_numpy():
  pred, target = rand(3, 8, 8, 3), rand(3, 8, 8, 3)
  w = rand(3, 8, 8, 1, lo=0.0, hi=10.0)
  ref = np.mean(w.astype(np.float64) * (pred.astype(np.float64) - target) ** 2)
  got = float(losses.masked_l2(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(w)))
  np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_masked_l2_bfloat16_prediction_is_promoted():
  pred, target = rand(2, 4, 4, 3), rand(2, 4, 4, 3)
  w = np.ones((2, 4, 4, 1), np.float32)
  got = losses.masked_l2(jnp.asarray(pred, jnp.bfloat16), jnp.asarray(target), jnp.asarray(w))
  assert got.dtype == jnp.float32
  ref = np.mean((np.asarray(jnp.asarray(pred, jnp.bfloat16), np.float64) - target) ** 2)
  np.testing.assert_allclose(float(got), ref, rtol=1e-5)


# ------------------------------------------------------------------------- overlap weights


def test_overlap_weights_centre_box_64_overlap_4():
  m = centre_patch_mask(64, 4)
  w = np.asarray(losses.overlap_weights(jnp.asarray(m), 4, 10.0))
  assert w.shape == (1, 64, 64, 1)
  inner = w[0, 4:60, 4:60, 0]
  assert inner.shape == (56, 56) and np.all(inner == 1.0)
  ring = w[0, ..., 0].copy()
  ring[4:60, 4:60] = np.nan
  ring = ring[~np.isnan(ring)]
  assert ring.size == 64 * 64 - 56 * 56
  assert np.all(ring == 10.0)


def test_overlap_weights_zero_overlap_all_ones():
  m = centre_patch_mask(64, 0)
  w = np.asarray(losses.overlap_weights(jnp.asarray(m), 0, 10.0))
  assert np.all(w == 1.0)


@pytest.mark.parametrize('overlap', [1, 2, 3])
def test_overlap_weights_random_region_matches_dilation(overlap):
  m = (RNG.uniform(size=(2, 16, 16, 1)) > 0.93).astype(np.float32)
  m[:, 7, 7] = 1  # never empty
  ref = np_overlap_weights(m, overlap, 10.0)
  got = np.asarray(losses.overlap_weights(jnp.asarray(m), overlap, 10.0))
  np.testing.assert_array_equal(got, ref)
  assert np.any(got == 0) and np.any(got == 10) and np.any(got == 1)


def test_reconstruction_loss_uses_overlap_weights():
  c = tiny()  # hole 16, overlap 2, overlap weight 10
  pred, target = rand(2, 16, 16, 3), rand(2, 16, 16, 3)
  m = centre_patch_mask(16, 2, 2)
  batch = {'target': jnp.asarray(target), 'patch_mask': jnp.asarray(m)}
  w = np_overlap_weights(m, 2, 10.0)
  ref = np.mean(w * (pred.astype(np.float64) - target) ** 2)
  got = float(losses.reconstruction_loss(jnp.asarray(pred), batch, c))
  np.testing.assert_allclose(got, ref, rtol=1e-5)


# ---------------------------------------------------------------------------------- KL


def test_kl_closed_form():
  mu, logvar = rand(4, 7, lo=-2, hi=2), rand(4, 7, lo=-3, hi=2)
  s2 = np.exp(logvar.astype(np.float64))
  ref = 0.5 * np.sum(s2 + mu.astype(np.float64) ** 2 - 1.0 - np.log(s2), axis=-1)
  got = np.asarray(losses.kl_divergence(jnp.asarray(mu), jnp.asarray(logvar)))
  assert got.shape == (4,)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      np.asarray(losses.kl_divergence(jnp.zeros((2, 5)), jnp.zeros((2, 5)))), 0.0, atol=0
  )


@pytest.mark.parametrize('mu,sigma', [(0.0, 1.0), (1.5, 0.5), (-0.7, 2.0), (0.3, 0.1)])
def test_kl_1d_numerical_integration_and_monte_carlo(mu, sigma):
  got = float(
      losses.kl_divergence(
          jnp.asarray([[mu]], jnp.float32), jnp.asarray([[2 * np.log(sigma)]], jnp.float32)
      )[0]
  )

  def log_q(z):
    return -0.5 * ((z - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)

  def log_p(z):
    return -0.5 * z**2 - 0.5 * np.log(2 * np.pi)

  z = np.linspace(mu - 14 * sigma, mu + 14 * sigma, 200_001)
  integrand = np.exp(log_q(z)) * (log_q(z) - log_p(z))
  numeric = np.sum((integrand[1:] + integrand[:-1]) * np.diff(z)) / 2
  np.testing.assert_allclose(got, numeric, rtol=1e-4, atol=1e-6)

  samples = np.random.default_rng(1).normal(mu, sigma, 400_000)
  terms = log_q(samples) - log_p(samples)
  stderr = terms.std() / np.sqrt(terms.size)
  assert abs(got - terms.mean()) < 5 * stderr + 1e-6


# ------------------------------------------------------------------------- adversarial


def np_neg_log_sigmoid(x):
  return -np.log(1.0 / (1.0 + np.exp(-np.asarray(x, np.float64))))


def test_discriminator_and_adversarial_losses_match_numpy():
  real, fake = rand(16, lo=-6, hi=6), rand(16, lo=-6, hi=6)
  ref_d = np.mean(np_neg_log_sigmoid(real)) + np.mean(
      -np.log(1 - 1 / (1 + np.exp(-fake.astype(np.float64))))
  )
  ref_a = np.mean(np_neg_log_sigmoid(fake))
  np.testing.assert_allclose(float(losses.discriminator_loss(real, fake)), ref_d, rtol=1e-5)
  np.testing.assert_allclose(float(losses.adversarial_loss(fake)), ref_a, rtol=1e-5)
  # A perfect discriminator has loss 0; a confused one log 4.
  np.testing.assert_allclose(
      float(losses.discriminator_loss(jnp.zeros(3), jnp.zeros(3))), 2 * np.log(2), rtol=1e-6
  )


def test_huge_logits_stay_finite():
  big = jnp.asarray([1e4, 1e4], jnp.float32)
  assert float(losses.discriminator_loss(big, -big)) == 0.0
  np.testing.assert_allclose(float(losses.discriminator_loss(-big, big)), 2e4, rtol=1e-6)
  np.testing.assert_allclose(float(losses.adversarial_loss(-big)), 1e4, rtol=1e-6)
  assert float(losses.adversarial_loss(big)) == 0.0
  g_real, g_fake = jax.grad(losses.discriminator_loss, argnums=(0, 1))(-big, big)
  np.testing.assert_allclose(np.asarray(g_real), -0.5)  # d/dx softplus(-x) = -sigmoid(-x) -> -1 / 2
  np.testing.assert_allclose(np.asarray(g_fake), 0.5)
  g = jax.grad(losses.adversarial_loss)(big)
  assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g) == 0)


# ------------------------------------------------------------------------------- joint


def _batch(hole=16, overlap=2, b=2):
  return {
      'target': jnp.asarray(rand(b, hole, hole, 3)),
      'patch_mask': jnp.asarray(centre_patch_mask(hole, overlap, b)),
  }


def test_gan_generator_loss_weights():
  c = tiny()
  assert (c.loss.rec_weight, c.loss.adv_weight) == (0.999, 0.001)
  batch, pred, logits = _batch(), jnp.asarray(rand(2, 16, 16, 3)), jnp.asarray(rand(2, lo=-3, hi=3))
  total, parts = losses.gan_generator_loss(pred, logits, batch, c)
  rec = float(losses.reconstruction_loss(pred, batch, c))
  adv = float(np.mean(np_neg_log_sigmoid(logits)))
  np.testing.assert_allclose(float(parts['rec_loss']), rec, rtol=1e-6)
  np.testing.assert_allclose(float(parts['adv_loss']), adv, rtol=1e-5)
  np.testing.assert_allclose(float(total), 0.999 * rec + 0.001 * adv, rtol=1e-5)
  c.loss.adv_weight = 0.5
  total2, _ = losses.gan_generator_loss(pred, logits, batch, c)
  np.testing.assert_allclose(float(total2), 0.999 * rec + 0.5 * adv, rtol=1e-5)


@pytest.mark.parametrize('kl_weight', [1.0, 0.25])
def test_vae_loss(kl_weight):
  c = tiny(loss__kl_weight=kl_weight)
  batch, pred = _batch(), jnp.asarray(rand(2, 16, 16, 3))
  mu, logvar = rand(2, 64), rand(2, 64, lo=-2, hi=1)
  total, parts = losses.vae_loss(pred, jnp.asarray(mu), jnp.asarray(logvar), batch, c)
  w = np_overlap_weights(np.asarray(batch['patch_mask']), 2, 10.0)
  rec = np.mean(w * (np.asarray(pred, np.float64) - np.asarray(batch['target'])) ** 2)
  kl = np.mean(
      0.5
      * np.sum(np.exp(logvar.astype(np.float64)) + mu.astype(np.float64) ** 2 - 1 - logvar, axis=-1)
  )
  np.testing.assert_allclose(float(parts['rec_loss']), rec, rtol=1e-5)
  np.testing.assert_allclose(float(parts['kl']), kl, rtol=1e-5)
  np.testing.assert_allclose(float(total), rec + kl_weight * kl / (16 * 16 * 3), rtol=1e-5)


# ------------------------------------------------------------------------------ report


def test_report_loss_hand_computed():
  # A constant error of 0.5 over a 4x4 hole x 3 channels: 16 * 3 * 0.25 = 12.
  target = np.zeros((2, 8, 8, 3), np.float32)
  pred = target + 0.5
  m = np.zeros((2, 8, 8, 1), np.float32)
  m[:, 2:6, 2:6] = 1
  got = np.asarray(losses.report_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(m)))
  np.testing.assert_array_equal(got, [12.0, 12.0])


def test_report_loss_random_matches_numpy():
  pred, target = rand(3, 16, 16, 3), rand(3, 16, 16, 3)
  m = centre_patch_mask(16, 2, 3)
  ref = np.sum((pred.astype(np.float64) - target) ** 2 * m, axis=(1, 2, 3))
  got = np.asarray(losses.report_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(m)))
  assert got.shape == (3,)
  np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_report_loss_of_paper_config_is_sum_over_64x64_hole():
  """The paper config (overlap 0): report loss = sum over the full 64x64x3 patch."""
  c = preset('paper')
  images = np.zeros((1, 256, 256, 3), np.float32)
  batch = masks.make_batch(jnp.asarray(images), jax.random.key(0), c)
  assert batch['patch_mask'].shape == (1, 64, 64, 1) and float(batch['patch_mask'].sum()) == 4096
  got = float(losses.report_loss(batch['target'] + 0.1, batch['target'], batch['patch_mask'])[0])
  np.testing.assert_allclose(got, 64 * 64 * 3 * 0.01, rtol=1e-5)
