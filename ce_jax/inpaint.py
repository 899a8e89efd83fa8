"""Fills holes in your own photos, of any size and aspect ratio, with a trained model.

  python -m ce_jax.inpaint --input=photo.jpg --output=out/ [--mask=center]   # the shipped model
  python -m ce_jax.inpaint --workdir=runs/demo --input=photo.jpg              # your own run
  --mask=center        the centre of the photo, as large (relative to it) as in training
  --mask=x,y,w,h       a rectangle in the photo's pixels
  --mask=hole.png      white = hole; several separate holes are filled one after another

Each hole is painted at the model's resolution: a square window around it, scaled so the hole
fits the model's hole, goes through the generator, and the painted pixels are scaled back and
pasted into the full-resolution photo. A model trained on square holes (mask kind center or
block) is shown the whole square of its training around the hole, whatever the hole's shape;
a residual model (the shipped one) sees the hole itself, on its harmonic fill, and its
correction, scaled up, is added to the harmonic fill of the photo's own pixels.
A narrow band around the hole is blended; every pixel farther out is left exactly as it was.

Outputs: a photo P under --input (a folder) is written to OUTPUT/<P's folder relative to
--input>/STEM_filled.png. When photos of one folder share a stem (a.jpg, a.png), the first in
name order keeps STEM_filled.png and the others are named STEM_EXT_filled.png (a_png_filled.png),
so no output overwrites another; and no output ever replaces a file that exists already (an
input, an earlier run's output, any file of yours, even with --output=--input): the next free
name is taken (STEM_EXT_filled.png, STEM_EXT_2_filled.png, ...). A photo that cannot be read or
filled is skipped with a one-line warning; the command fails only when no photo could be filled.
Photos are read as training reads them (`images.read_photo`): 16-bit photos are scaled to 8
bits, and transparent pixels are composited on white, which the command says.
"""

import functools
import itertools
import os
from pathlib import Path
import sys

from absl import app, flags, logging
import cv2
import jax
import ml_collections
import numpy as np
from PIL import Image

from ce_jax import checkpoints, harmonic, images, masks, platform, steps


def hole_from_spec(spec: str, height: int, width: int, config) -> np.ndarray:
  """The (H, W) bool hole of a photo from --mask: 'center', 'x,y,w,h' or a mask image path."""
  if spec == 'center':  # as large, relative to the photo, as the model's hole (less 1 px a side)
    paintable = config.hole_size - 2 * config.mask.overlap - 2
    side = max(1, min(height, width) * paintable // config.image_size)
    y, x = (height - side) // 2, (width - side) // 2
    hole = np.zeros((height, width), bool)
    hole[y : y + side, x : x + side] = True
    return hole
  if spec.count(',') == 3:
    try:
      x, y, w, h = (int(v) for v in spec.split(','))
    except ValueError:
      raise ValueError(f'--mask={spec!r}: a rectangle is four integers x,y,w,h.') from None
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
      raise ValueError(f'--mask={spec}: the rectangle leaves the {width}x{height} photo.')
    hole = np.zeros((height, width), bool)
    hole[y : y + h, x : x + w] = True
    return hole
  try:
    return masks.hole_from_image(_open_mask(spec), height, width)
  except ValueError as e:
    raise ValueError(f'--mask={spec}: {e}') from None


def _open_mask(spec: str) -> Image.Image:
  """The mask image named by --mask, decoded, or a one-line ValueError."""
  if not Path(spec).is_file():
    raise ValueError(f"--mask={spec!r} is neither 'center', x,y,w,h nor an existing mask image.")
  try:
    with Image.open(spec) as img:
      img.load()
      return img
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many kinds
    raise ValueError(f'Cannot read mask image {spec}: {_first_line(e)}') from None


def window_for(hole: np.ndarray, config) -> tuple[int, int, int]:
  """(top, left, side) of the square photo window that the model sees for one hole.

  Scaled so the hole spans the model's paintable area (hole_size - 2*overlap px at image_size),
  which keeps the proportion of context to hole that the model was trained with.
  """
  height, width = hole.shape
  extent = max(masks.bounding_box(hole)[2:])
  paintable = config.hole_size - 2 * config.mask.overlap
  side = int(np.ceil(extent * config.image_size / max(paintable - 2, 1)))  # 1 px spare a side
  if side > min(height, width):
    raise ValueError(
        f'A hole of {extent} px needs a {side}x{side} px window of context, more than this '
        f'{width}x{height} photo has; this model fills holes up to '
        f'{min(height, width) * paintable // config.image_size} px here. Use a smaller hole.'
    )
  return (*masks.square_around(hole, side), side)


# Masks of these kinds train a model on the whole square inside the patch box only; such a model
# paints any other hole shape poorly, so it is shown that square (the box less its overlap)
# around the user's hole, and only the user's hole is pasted back.
SQUARE_HOLES = ('center', 'block')


@functools.lru_cache(maxsize=8)
def _assembler(config: ml_collections.FrozenConfigDict):
  """`masks.assemble` for one window, compiled once per config (its pre-fill may be a solve)."""
  return jax.jit(lambda image, region, corner: masks.assemble(image, region, corner, config))


def fill_one(
    photo: np.ndarray, hole: np.ndarray, config, gen_variables, predict, blend: int
) -> np.ndarray:
  """Paints one connected hole of a float [-1, 1] photo; returns the new photo."""
  top, left, side = window_for(hole, config)
  s = config.image_size
  crop = photo[top : top + side, left : left + side]
  crop_hole = hole[top : top + side, left : left + side]
  small = cv2.resize(crop, (s, s), interpolation=cv2.INTER_AREA)
  region = cv2.resize(crop_hole.astype(np.uint8), (s, s), interpolation=cv2.INTER_NEAREST)
  region = np.maximum(
      region, cv2.resize(crop_hole.astype(np.uint8), (s, s), interpolation=cv2.INTER_AREA) > 0
  )  # no hole pixel lost
  box = masks.box_around(region, config.hole_size, config.mask.overlap)
  # Show a square-hole model the square it learnt to fill; a residual model sees the hole
  # itself (its mask channel), on the harmonic fill of the context around it: +0.23 dB over
  # the square on held-out photos (experiments/pretrained/README.md).
  if config.mask.kind in SQUARE_HOLES and not config.residual:
    square = masks.place(masks.box_region(config.hole_size, config.mask.overlap), box, s)
    region = np.maximum(region, np.asarray(square) > 0)
  assemble = _assembler(ml_collections.FrozenConfigDict(config))
  batch = assemble(small[None], region[None, ..., None].astype(np.float32), np.asarray(box)[None])
  filled = np.asarray(predict(gen_variables, batch))[0]
  up = lambda x: cv2.resize(np.asarray(x), (side, side), interpolation=cv2.INTER_CUBIC)
  if config.residual and config.prefill == 'harmonic':
    # The model painted a correction on the harmonic fill, at its resolution: add it, scaled
    # up, to the harmonic fill of the photo's own pixels over the same region, which meets the
    # context pixel for pixel (a scaled-up fill would blur the hole's border).
    prefilled = np.asarray(batch['masked'])[0]
    big_region = crop_hole | (up(region.astype(np.float32)) > 0.5)
    base = harmonic.fill_window(crop, big_region, up(prefilled))
    painted = np.asarray(base) + up(filled - prefilled)
  else:
    painted = up(filled)
  # alpha: 1 in the hole, falling linearly to 0 over `blend` px outside it, 0 beyond.
  distance = cv2.distanceTransform((~crop_hole).astype(np.uint8), cv2.DIST_L2, 5)
  alpha = np.clip(1.0 - distance / (blend + 1.0), 0.0, 1.0)[..., None]
  out = photo.copy()
  out[top : top + side, left : left + side] = alpha * painted + (1.0 - alpha) * crop
  return out


def inpaint_photo(
    photo_u8: np.ndarray, hole: np.ndarray, config, gen_variables, predict=None, blend: int = 3
) -> np.ndarray:
  """Fills every connected hole of an (H, W, 3) uint8 photo; returns uint8 of the same size."""
  check_blend(blend)
  predict = predict or steps.make_predict(config)
  photo = images.from_uint8(photo_u8)
  n, labels = cv2.connectedComponents(hole.astype(np.uint8), connectivity=8)
  for label in range(1, n):
    photo = fill_one(photo, labels == label, config, gen_variables, predict, blend)
  out = images.to_uint8(photo)
  outside = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 5) > blend + 1
  out[outside] = photo_u8[outside]  # exactly unchanged away from the holes
  return out


class Inpainter:
  """A trained generator ready to fill holes: compiled once per photo-window size, then each
  call is the network's forward pass and a few resizes.

    inpainter = Inpainter.load('pretrained')         # or a run's workdir / an export
    filled = inpainter(photo, hole)                  # uint8 (H, W, 3), bool (H, W) -> uint8
  """

  def __init__(self, config, gen_variables, step: int | None = None, blend: int = 3):
    check_blend(blend)
    self.config, self.variables, self.step, self.blend = config, gen_variables, step, blend
    self.predict = steps.make_predict(config)

  @classmethod
  def load(cls, workdir=checkpoints.PRETRAINED, step=None, blend: int = 3) -> 'Inpainter':
    """The generator of a run, an export or 'pretrained' (`checkpoints.load_generator`)."""
    config, variables, step = checkpoints.load_generator(workdir, step)
    return cls(config, variables, step, blend)

  def hole(self, spec: str, height: int, width: int) -> np.ndarray:
    """The (H, W) bool hole of --mask's `spec` ('center', 'x,y,w,h' or a mask image path)."""
    return hole_from_spec(spec, height, width, self.config)

  def __call__(self, photo: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`photo` (H, W, 3) uint8 with every connected region of the bool `hole` filled."""
    return inpaint_photo(photo, hole, self.config, self.variables, self.predict, self.blend)


def check_blend(blend) -> None:
  if not (isinstance(blend, (int, np.integer)) and blend >= 0):
    raise ValueError(f'--blend={blend} must be >= 0 (pixels of blended band; 0 = none).')


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0][:200] if text else type(e).__name__


def read_photo(path: Path, warn=None) -> np.ndarray:
  """A photo as uint8 RGB, of any size, read as training reads images (`images.read_photo`:
  16-bit scaled to 8 bits, transparency composited on white, said through `warn`). PIL's
  decompression-bomb limit is lifted (the photos are the user's own, and inpainting promises
  any size)."""
  limit = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = None
  try:
    photo, note = images.read_photo(path)
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many kinds
    raise ValueError(f'Cannot read image {path}: {_first_line(e)}') from None
  finally:
    Image.MAX_IMAGE_PIXELS = limit
  if note and warn:
    warn(f'{path}: {note}.')
  return photo


def output_paths(files: list[Path], src: Path, out_dir: Path) -> dict[Path, Path]:
  """Each input photo's output path: unique, and never a file that exists (see the module's
  docstring for the rule)."""
  taken, paths = set(), {}
  for path in sorted(files):
    folder = out_dir / (path.parent.relative_to(src) if src.is_dir() else Path())
    ext = path.suffix.lstrip('.').lower()
    candidates = itertools.chain(
        [folder / f'{path.stem}_filled.png', folder / f'{path.stem}_{ext}_filled.png'],
        (folder / f'{path.stem}_{ext}_{i}_filled.png' for i in itertools.count(2)),
    )
    target = next(c for c in candidates if c not in taken and not os.path.lexists(c))
    taken.add(target)
    paths[path] = target
  return paths


def write_new_png(image: np.ndarray, target: Path) -> None:
  """Writes `image` to `target` as a PNG, only if no file is there (created exclusively); a
  failed write (a full disk) leaves no partial file."""
  target.parent.mkdir(parents=True, exist_ok=True)
  try:
    f = open(target, 'xb')
  except FileExistsError:
    raise ValueError(f'{target} appeared meanwhile; it is left as it is.') from None
  try:
    with f:
      Image.fromarray(image).save(f, 'PNG')
  except BaseException:
    target.unlink(missing_ok=True)
    raise


FLAGS = flags.FLAGS


def define_model_flags():
  """--workdir, --step and --blend: which generator paints, and how it is pasted (also the app's)."""
  flags.DEFINE_string(
      'workdir',
      checkpoints.PRETRAINED,
      "Training run directory (holds checkpoints/), an export, or 'pretrained' "
      '(the model shipped with ce_jax).',
  )
  flags.DEFINE_string('step', 'latest', "Checkpoint: 'latest', 'best' or a step number.")
  flags.DEFINE_integer('blend', 3, 'Width in photo pixels of the blended band around each hole.')


def define_flags():
  """Flags of this command (defined only when it runs, so modules import each other freely)."""
  define_model_flags()
  flags.DEFINE_string('input', None, 'A photo, or a folder of photos.')
  flags.DEFINE_string(
      'output',
      'inpainted',
      'Folder for the filled photos (STEM_filled.png, in '
      "the input's sub-folders; STEM_EXT_filled.png when stems repeat).",
  )
  flags.DEFINE_string('mask', 'center', "'center', 'x,y,w,h' or a mask image (white = hole).")


def _check_mask_spec(spec: str) -> None:
  """Refuses a mask file that cannot be read before any photo is painted."""
  if spec != 'center' and spec.count(',') != 3:
    _open_mask(spec)


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax and clu are chatty at INFO
  del argv
  if not FLAGS.input:
    sys.exit('inpaint: --input is required (a photo or a folder of photos).')
  platform.setup()
  try:
    check_blend(FLAGS.blend)
    src = Path(FLAGS.input)
    if src.is_dir():
      files = images.list_images(src)
    elif src.is_file():
      files = [src]
    else:
      raise ValueError(f'--input={src} does not exist.')
    if not files:
      raise ValueError(f'No images ({", ".join(images.IMAGE_EXTENSIONS)}) under {src}.')
    out_dir = Path(FLAGS.output)
    if out_dir.exists() and not out_dir.is_dir():
      raise ValueError(f'--output={out_dir} is an existing file; name a folder.')
    _check_mask_spec(FLAGS.mask)
    config, gen_variables, _ = checkpoints.load_generator(FLAGS.workdir, FLAGS.step)
    predict = steps.make_predict(config)
    targets = output_paths(files, src, out_dir)

    def note(message):
      print(f'inpaint: note: {message}', file=sys.stderr, flush=True)

    failed = []
    for path in files:
      try:
        photo = read_photo(path, warn=note)
        hole = hole_from_spec(FLAGS.mask, *photo.shape[:2], config)
        result = inpaint_photo(photo, hole, config, gen_variables, predict, FLAGS.blend)
      except ValueError as e:
        if len(files) == 1:
          raise
        failed.append(path)
        print(f'inpaint: skipping {path}: {e}', file=sys.stderr, flush=True)
        continue
      target = targets[path]
      write_new_png(result, target)
      print(f'{path} -> {target}')
  except (ValueError, OSError) as e:
    sys.exit(f'inpaint: {e}')
  if failed:
    names = ', '.join(str(p) for p in failed[:5]) + (', ...' if len(failed) > 5 else '')
    message = f'filled {len(files) - len(failed)} of {len(files)} photos; skipped {names}.'
    if len(failed) == len(files):
      sys.exit(f'inpaint: no photo could be filled: {message}')
    print(f'inpaint: {message}', file=sys.stderr)


if __name__ == '__main__':
  define_flags()
  app.run(main)
