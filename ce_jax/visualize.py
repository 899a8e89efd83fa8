"""PNG grids of inpaintings: one row per image, one labelled column per version of it."""

from pathlib import Path

from PIL import Image, ImageDraw

from ce_jax import images


def grid(columns: dict, rows: int | None = None, scale: int = 1, pad: int = 2) -> Image.Image:
  """Tiles {label: (B, H, W, 3) in [-1, 1]} into rows of images under a header of labels."""
  cols = {k: images.to_uint8(v)[:rows] for k, v in columns.items()}
  n, h, w, _ = next(iter(cols.values())).shape
  h, w = h * scale, w * scale
  header = 14
  out = Image.new('RGB', (len(cols) * (w + pad) + pad, header + n * (h + pad) + pad), 'white')
  draw = ImageDraw.Draw(out)
  for j, (label, imgs) in enumerate(cols.items()):
    x = pad + j * (w + pad)
    draw.text((x + 2, 1), label, fill='black')
    for i, img in enumerate(imgs):
      tile = (
          Image.fromarray(img).resize((w, h), Image.NEAREST) if scale > 1 else Image.fromarray(img)
      )
      out.paste(tile, (x, header + pad + i * (h + pad)))
  return out


def save_grid(path, columns: dict, rows: int | None = None) -> Path:
  """Writes the grid as PNG (images under 96 px are shown 2x) and returns its path."""
  size = next(iter(columns.values())).shape[1]
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  grid(columns, rows, scale=2 if size < 96 else 1).save(path)
  return path
