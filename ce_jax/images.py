"""Image facts every part of ce_jax shares: which files are images, how a file becomes RGB pixels,
how pixels map to the models' [-1, 1], and how a photo becomes a training or test crop.

Numpy and Pillow only (no TensorFlow), so that every loader, the inpainting command and the
baselines see exactly the same pixels.
"""

import math
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp')
# Training rescales the shorter side to at most this times the crop size (never below it), so
# that random crops move along both axes: 144 px for 128 px crops, the bundled photos' size.
TRAIN_SCALE = 9 / 8


def list_images(root: Path) -> list[Path]:
  """Every image file under `root`, recursively, case-insensitive extensions, sorted."""
  return sorted(p for p in root.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def to_uint8(images) -> np.ndarray:
  """[-1, 1] floats -> uint8 pixels."""
  return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(pixels: np.ndarray) -> np.ndarray:
  """uint8 pixels -> float32 in [-1, 1] (0 -> -1 and 255 -> 1 exactly)."""
  return pixels.astype(np.float32) / 127.5 - 1.0


ALPHA_MODES = ('RGBA', 'LA', 'PA', 'RGBa', 'La')
# What `to_rgb` does with transparency, in the words a user reads (inpaint and the app say it).
TRANSPARENCY_NOTE = (
    'its transparent pixels are composited on white, as training reads photos '
    '(the result has no transparency)'
)


def has_transparency(img: Image.Image) -> bool:
  """Whether `img` has a pixel that is not fully opaque (which `to_rgb` composites on white)."""
  if img.mode not in ALPHA_MODES and 'transparency' not in img.info:
    return False
  return img.convert('RGBA').getchannel('A').getextrema()[0] < 255


def to_rgb(img: Image.Image) -> Image.Image:
  """Any Pillow mode to 8-bit RGB, the one conversion every reader of images uses (training,
  evaluation, inpaint, the app): 16/32-bit grey is scaled to 8 bits (not clipped to white), and
  transparent pixels become white, not their hidden colour."""
  if img.mode.startswith('I'):  # 16/32-bit integer grey: scale 16-bit range to 8 bits
    img = Image.fromarray((np.asarray(img, np.float32) / 257).clip(0, 255).astype(np.uint8), 'L')
  if img.mode in ALPHA_MODES or 'transparency' in img.info:
    img = img.convert('RGBA')
    img = Image.alpha_composite(Image.new('RGBA', img.size, (255, 255, 255, 255)), img)
  return img if img.mode == 'RGB' else img.convert('RGB')


def read_photo(source: str | Path | BinaryIO) -> tuple[np.ndarray, str]:
  """A user's photo, any size, as (uint8 RGB (H, W, 3), note), read as training reads images:
  turned upright by its EXIF tag, then `to_rgb`. `note` is '' or says how transparency was
  handled (TRANSPARENCY_NOTE). Pillow's pixel limit applies: lift it around the call for
  photos of any size. Raises on unreadable input."""
  with Image.open(source) as img:
    img = ImageOps.exif_transpose(img)  # loads the pixels; truncated files raise here
  if min(img.size) < 1:
    raise ValueError('image has no pixels')
  note = TRANSPARENCY_NOTE if has_transparency(img) else ''
  return np.asarray(to_rgb(img), np.uint8), note


def load_image(path_or_file: str | Path | BinaryIO, min_side: int = 0) -> np.ndarray:
  """Decodes an image file to uint8 RGB (H, W, 3), oriented by its EXIF tag.

  With `min_side` > 0 the image is decoded or reduced to the smallest size whose shorter side is
  still >= min_side (JPEG: `draft` decodes at 1/2, 1/4 or 1/8 scale; others: `reduce` right after
  decoding), so that a 12000x12000 photo costs little memory and time. Raises on unreadable input.
  """
  with Image.open(path_or_file) as img:
    if min_side > 0:
      img.draft('RGB', (min_side, min_side))
    img = ImageOps.exif_transpose(img)  # loads the pixels; truncated files raise here
  if min(img.size) < 1:
    raise ValueError('image has no pixels')
  img = to_rgb(img)
  factor = min(img.size) // min_side if min_side > 0 else 1
  if factor >= 2:
    img = img.reduce(factor)
  return np.asarray(img, np.uint8)


def decode_side(size: int, min_fraction: float = 0.0) -> int:
  """The shorter side `load_image` must keep so that `crop` never upscales a large photo: a
  zoomed window of min_fraction x the shorter side needs more pixels than a rescaled one."""
  return math.ceil(size / min_fraction if min_fraction > 0 else TRAIN_SCALE * size)


def crop(
    image: np.ndarray, size: int, rng: np.random.Generator | None = None, min_fraction: float = 0.0
) -> np.ndarray:
  """uint8 (H, W, 3) -> float32 (size, size, 3) in [-1, 1].

  Test (`rng` None): the centre crop after rescaling the shorter side to `size`. Train: a random
  crop after rescaling the shorter side to within [size, TRAIN_SCALE * size] (or, with
  `min_fraction` > 0, a random window of min_fraction..1 x the shorter side), and a random flip,
  all drawn from `rng`. Both cut the crop's window from the original and resize only the window
  (bilinear, antialiased when it shrinks): the same pixels for less work, whatever the aspect.
  """
  height, width = image.shape[:2]
  short = min(height, width)
  if rng is not None and min_fraction > 0:  # zoom: a window of a random fraction of the side
    fraction = rng.uniform(min_fraction, 1.0)
  else:  # the window that becomes `size` px once the shorter side is rescaled to `target`
    target = min(max(short, size), math.ceil(TRAIN_SCALE * size)) if rng is not None else size
    fraction = size / target
  side = min(max(round(fraction * short), 1), short)
  if rng is not None:
    u = rng.random(2)
    top = min(int(u[0] * (height - side + 1)), height - side)
    left = min(int(u[1] * (width - side + 1)), width - side)
  else:
    top, left = (height - side) // 2, (width - side) // 2
  window = image[top : top + side, left : left + side]
  if side != size:  # Pillow's bilinear filter widens with the scale: antialiased when shrinking
    window = np.asarray(Image.fromarray(window).resize((size, size), Image.BILINEAR))
  if rng is not None and rng.random() < 0.5:
    window = window[:, ::-1]
  return from_uint8(window)
