"""Inpainting metrics, defined once and used by training, evaluation, experiments and benchmarks.

All take *filled* images — the input with its hole painted, by a model or a baseline — in
[-1, 1], and the batch from `masks.make_batch`; they return one value per image, (B,), so that
callers can average exactly over a dataset (padding rows excluded).

* l1, l2:  mean absolute / squared error over the hole's pixels in [0, 1], x100 (Pathak et al.).
* psnr:    over the hole, per image, in dB.
* ssim:    over the whole image (dm-pix, 11x11 Gaussian window).
* report_loss: sum of squared errors over the hole in [-1, 1] (the report's Tables 1-3).
"""

import dm_pix as pix
import numpy as np
import jax.numpy as jnp

from ce_jax import losses, masks

NAMES = ('report_loss', 'l1', 'l2', 'psnr', 'ssim')


def to_unit(x):
  """[-1, 1] -> [0, 1], clipped."""
  return jnp.clip((x.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


def per_image(filled, batch) -> dict:
  """Every metric of NAMES for each image of the batch: dict of (B,) float32."""
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
  }


class Average:
  """Running mean of per-image metrics over a dataset, skipping padding rows (valid == 0)."""

  def __init__(self):
    self.sums, self.count = {}, 0.0

  def update(self, values: dict, valid=None) -> None:
    valid = np.ones(len(next(iter(values.values())))) if valid is None else np.asarray(valid)
    for k, v in values.items():
      v = np.where(valid > 0, np.asarray(v, np.float64), 0.0)  # padding rows may hold NaN
      self.sums[k] = self.sums.get(k, 0.0) + float(np.sum(v * valid))
    self.count += float(valid.sum())

  def result(self) -> dict:
    return {k: s / max(self.count, 1.0) for k, s in self.sums.items()} | {'images': int(self.count)}
