"""Classical fills printed beside every model: the hole filled with the context's mean colour,
OpenCV's Telea inpainting, and the harmonic fill (Laplace's equation in the hole with the
context as boundary), the strongest of the three and the anchor a learned model has to beat.
Each batch function returns filled images in [-1, 1], scored with `metrics`."""

import cv2
import jax.numpy as jnp
import numpy as np
from ce_jax import harmonic as harmonic_lib
from ce_jax import images as images_lib


def mean_fill(batch):
  """Each image's hole filled with the mean colour of its visible pixels."""
  keep = 1.0 - batch['mask']
  mean = jnp.sum(batch['image'] * keep, axis=(1, 2), keepdims=True) / jnp.maximum(
      jnp.sum(keep, axis=(1, 2), keepdims=True), 1.0
  )
  return jnp.where(batch['mask'] > 0, mean, batch['image'])


def telea_photo(photo: np.ndarray, hole: np.ndarray, radius: int = 5) -> np.ndarray:
  """An (H, W, 3) uint8 photo with its (H, W) bool hole filled by OpenCV's Telea inpainting
  (pixels outside the hole are returned unchanged)."""
  return cv2.inpaint(photo, hole.astype(np.uint8), radius, cv2.INPAINT_TELEA)


def telea(batch, radius: int = 5) -> np.ndarray:
  """Each image's hole filled by `telea_photo` on 8-bit pixels."""
  images = np.asarray(batch['image'], np.float32)
  holes = np.asarray(batch['mask'])[..., 0] > 0
  out = np.empty_like(images)
  for i, (img, hole) in enumerate(zip(images, holes)):
    u8 = images_lib.to_uint8(img)
    painted = telea_photo(u8, hole, radius)
    out[i] = np.where(hole[..., None], images_lib.from_uint8(painted), img)
  return out


def harmonic(batch) -> np.ndarray:
  """Each image's hole filled by `harmonic.fill_photo` (exact), in [-1, 1] (float32)."""
  images = np.asarray(batch['image'], np.float64)
  holes = np.asarray(batch['mask'])[..., 0] > 0
  return np.stack([harmonic_lib.fill_photo(img, hole) for img, hole in zip(images, holes)]).astype(
      np.float32
  )


BASELINES = {'mean_fill': mean_fill, 'telea': telea, 'harmonic': harmonic}
