"""Holes: where they are, how they are filled, and how a predicted patch goes back in.

Every mask is a square *patch box* of side `hole_size` (what the decoder paints) at a top-left
`corner = (y, x)`, and inside it a *region* (the pixels actually missing from the input):

* ``center``   the box in the middle of the image; region = box shrunk by `overlap` px a side
               (the original release: 4 px of context inside the predicted patch).
* ``block``    the same shape at a random position.
* ``freeform`` a random position, and a region made of thick random strokes inside the box.
* ``file``     a user's mask image (white = hole), placed on the box around its bounding box.

Masking runs in JAX, on the accelerator, on a batch of images that tf.data decoded and cropped:
the pipeline (``input_pipeline``), the evaluator and the inpainting command all call `make_batch`,
so there is one implementation of each mask, reproducible from a PRNG key.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from ce_jax import harmonic

KINDS = ('center', 'block', 'freeform', 'file')


def center_corner(image_size: int, hole_size: int) -> tuple[int, int]:
  """Top-left corner of the centred patch box."""
  o = (image_size - hole_size) // 2
  return o, o


def box_region(hole_size: int, overlap: int) -> jnp.ndarray:
  """(hole, hole) float mask of a box shrunk by `overlap` pixels on each side."""
  r = jnp.arange(hole_size)
  inside = (r >= overlap) & (r < hole_size - overlap)
  return (inside[:, None] & inside[None, :]).astype(jnp.float32)


def freeform_region(
    key, hole_size: int, overlap: int, max_strokes: int, max_vertices: int, max_radius: float
) -> jnp.ndarray:
  """(hole, hole) float mask of 1..max_strokes random thick polylines, `overlap` px from the edge."""
  k_n, k_v, k_r = jax.random.split(key, 3)
  radius_hi = max(1.0, min(max_radius * hole_size, (hole_size - 1 - 2 * overlap) / 2))
  radius = jax.random.uniform(k_r, (max_strokes, 1), minval=1.0, maxval=radius_hi)
  lo = overlap + radius_hi
  hi = max(lo, hole_size - 1 - overlap - radius_hi)
  vertices = jax.random.uniform(k_v, (max_strokes, max_vertices, 2), minval=lo, maxval=hi)
  n_strokes = jax.random.randint(k_n, (), 1, max_strokes + 1)
  a, b = vertices[:, :-1], vertices[:, 1:]  # segments (S, V-1, 2)
  yy, xx = jnp.meshgrid(jnp.arange(hole_size), jnp.arange(hole_size), indexing='ij')
  p = jnp.stack([yy, xx], -1).reshape(-1, 1, 1, 2).astype(jnp.float32)  # (P, 1, 1, 2)
  ab = b - a
  t = jnp.clip(jnp.sum((p - a) * ab, -1) / jnp.maximum(jnp.sum(ab * ab, -1), 1e-6), 0.0, 1.0)
  dist = jnp.linalg.norm(p - (a + t[..., None] * ab), axis=-1)  # (P, S, V-1)
  covered = (dist <= radius).any(-1) & (jnp.arange(max_strokes) < n_strokes)  # (P, S)
  region = covered.any(-1).reshape(hole_size, hole_size).astype(jnp.float32)
  return region * box_region(hole_size, overlap)  # never into the overlap border


def hole_from_image(img: Image.Image, height: int, width: int) -> np.ndarray:
  """(height, width) bool hole of a mask image (white = hole), resized with nearest neighbours;
  refuses a mask without a hole. The one reader of mask images (training, inpaint, the app)."""
  hole = np.asarray(img.convert('L').resize((width, height), Image.NEAREST)) > 127
  if not hole.any():
    raise ValueError('The mask is empty: it has no white (hole) pixels; paint the hole white.')
  return hole


def load_mask_file(path: str, image_size: int) -> np.ndarray:
  """Reads a mask image (white or non-zero = hole) and resizes it to (image_size, image_size)."""
  try:
    img = Image.open(path)
    img.load()
  except (OSError, ValueError) as e:
    raise ValueError(
        f'Cannot read mask file {path!r} ({e}); give a PNG with white where the hole is.'
    ) from None
  try:
    return hole_from_image(img, image_size, image_size).astype(np.float32)
  except ValueError as e:
    raise ValueError(f'Mask file {path!r}: {e}') from None


def bounding_box(region: np.ndarray) -> tuple[int, int, int, int]:
  """(top, left, height, width) of the non-zero pixels of a 2-D mask."""
  ys, xs = np.nonzero(region)
  if not len(ys):
    raise ValueError('The mask has no hole pixels.')
  return int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def square_around(region: np.ndarray, side: int) -> tuple[int, int]:
  """Top-left of the side x side square centred on `region`'s bounding box, kept in the image."""
  top, left, h, w = bounding_box(region)
  y = int(np.clip(top + h // 2 - side // 2, 0, region.shape[0] - side))
  x = int(np.clip(left + w // 2 - side // 2, 0, region.shape[1] - side))
  return y, x


def box_around(region: np.ndarray, hole_size: int, overlap: int = 0) -> tuple[int, int]:
  """Top-left of the patch box centred on a full-image `region`'s bounding box.

  Raises ValueError when the region does not fit in one box (the model cannot paint it).
  """
  _, _, h, w = bounding_box(region)
  inner = hole_size - 2 * overlap
  if h > inner or w > inner:
    raise ValueError(
        f"The hole spans {h}x{w} px at the model's resolution, more than the {inner}x{inner} px "
        f'this model paints; use a smaller hole or a model with a larger hole_size.'
    )
  return square_around(region, hole_size)


def place(region_in_box: jnp.ndarray, corner, image_size: int) -> jnp.ndarray:
  """Writes a (hole, hole) region into an all-zero (image, image) canvas at `corner`."""
  canvas = jnp.zeros((image_size, image_size), region_in_box.dtype)
  return jax.lax.dynamic_update_slice(canvas, region_in_box, tuple(corner))


def sample(key, batch_size: int, mask_cfg, image_size: int, hole_size: int, file_mask=None):
  """Draws `batch_size` masks of `mask_cfg.kind`.

  Returns (region, corner): region (B, H, W, 1) float32 with 1 where pixels are missing, and
  corner (B, 2) int32, the patch box's top-left corner.
  """
  kind, overlap = mask_cfg.kind, mask_cfg.overlap
  if kind not in KINDS:
    raise ValueError(f'Unknown mask kind {kind!r}; choose one of: {", ".join(KINDS)}.')
  if not 0 <= 2 * overlap < hole_size:
    raise ValueError(
        f'mask.overlap={overlap} leaves no hole in a {hole_size}px patch; '
        f'use 0 <= overlap < {hole_size // 2}.'
    )
  k_corner, k_shape = jax.random.split(key)
  if kind == 'file':
    if file_mask is None:
      file_mask = load_mask_file(mask_cfg.file, image_size)
    corner = jnp.asarray(box_around(file_mask, hole_size, overlap), jnp.int32)
    region = jnp.broadcast_to(jnp.asarray(file_mask), (batch_size, image_size, image_size))
    return region[..., None], jnp.broadcast_to(corner, (batch_size, 2))
  if kind == 'center':
    corner = jnp.broadcast_to(
        jnp.asarray(center_corner(image_size, hole_size), jnp.int32), (batch_size, 2)
    )
  else:
    corner = jax.random.randint(k_corner, (batch_size, 2), 0, image_size - hole_size + 1)
  if kind == 'freeform':
    keys = jax.random.split(k_shape, batch_size)
    inner = jax.vmap(
        lambda k: freeform_region(
            k, hole_size, overlap, mask_cfg.max_strokes, mask_cfg.max_vertices, mask_cfg.max_radius
        )
    )(keys)
  else:
    inner = jnp.broadcast_to(box_region(hole_size, overlap), (batch_size, hole_size, hole_size))
  region = jax.vmap(place, in_axes=(0, 0, None))(inner, corner, image_size)
  return region[..., None], corner


def fill_hole(images, region, fill: Sequence[float]):
  """The encoder's input: `images` with the missing `region` set to the constant `fill` colour."""
  return jnp.where(region > 0, jnp.asarray(fill, images.dtype), images)


def crop(images, corner, hole_size: int):
  """(B, hole, hole, C) patches of `images` at each example's `corner`."""

  def one(img, c):
    return jax.lax.dynamic_slice(img, (c[0], c[1], 0), (hole_size, hole_size, img.shape[-1]))

  return jax.vmap(one)(images, corner)


def paste(images, patches, corner, region):
  """`images` with the missing `region` replaced by the predicted `patches` placed at `corner`."""

  def one(img, p, c):
    return jax.lax.dynamic_update_slice(img, p.astype(img.dtype), (c[0], c[1], 0))

  canvas = jax.vmap(one)(images, patches, corner)
  return jnp.where(region > 0, canvas, images)


def make_batch(images, key, config, file_mask=None) -> dict:
  """Masks a batch of images in [-1, 1], (B, H, W, 3), with masks drawn from `key`."""
  region, corner = sample(
      key, images.shape[0], config.mask, images.shape[1], config.hole_size, file_mask
  )
  return assemble(images, region, corner, config, square=config.mask.kind in ('center', 'block'))


PREFILLS = ('constant', 'harmonic')


def prefill(images, region, corner, config, square: bool = False):
  """The encoder's input: the missing `region` filled with the constant `config.fill` (the
  original release) or, with config.prefill='harmonic', by the harmonic fill of the context.
  square=True promises that every region is its patch box shrunk by `mask.overlap` >= 1 px (as
  `sample` draws centre and block masks): a precomputed operator then paints it."""
  if config.prefill == 'constant':
    return fill_hole(images, region, config.fill)
  if config.prefill not in PREFILLS:
    raise ValueError(f'prefill={config.prefill!r}: use one of {", ".join(PREFILLS)}.')
  inset = config.mask.overlap if square and config.mask.overlap >= 1 else None
  return harmonic.fill_batch(images, region, corner, config.hole_size, inset).astype(images.dtype)


def assemble(images, region, corner, config, square: bool = False) -> dict:
  """The batch the networks consume, from images, their missing `region` and patch box `corner`:

  image  (B, H, W, 3)       the whole image
  masked (B, H, W, 3)       the encoder's input: the hole pre-filled (`prefill`)
  mask   (B, H, W, 1)       1 where pixels are missing
  box    (B, 2) int32       `corner`, the patch box's top-left (y, x)
  target (B, h, h, 3)       the true patch the decoder must paint
  patch_mask (B, h, h, 1)   `mask` cropped to the patch box

  square: see `prefill` (only `make_batch`, which drew the masks, can promise it).
  """
  region = jnp.asarray(region, images.dtype)
  corner = jnp.asarray(corner, jnp.int32)
  return {
      'image': images,
      'masked': prefill(images, region, corner, config, square),
      'mask': region,
      'box': corner,
      'target': crop(images, corner, config.hole_size),
      'patch_mask': crop(region, corner, config.hole_size),
  }
