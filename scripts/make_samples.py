"""Builds ce_jax/samples/: the small real photos bundled with the package, with their credits.

The bundled photos let `python -m ce_jax.train` run on a fresh machine with no download
(`--dataset=samples`). They are a hand-picked, varied subset of the shared photo collection
(landscapes, buildings, streets, animals, interiors), preferring CC0 / public-domain / CC-BY
sources, resized so that the shorter side is 144 px: enough for random 128x128 training crops.

Deterministic and re-runnable: the same sources give byte-identical files, and files of earlier
runs that are no longer picked are removed.

  python scripts/make_samples.py [--src=../shared/data/photos] [--dst=ce_jax/samples]
"""

import argparse
import csv
from pathlib import Path

from PIL import Image

SHORT_SIDE = 144
QUALITY = 90
ROOT = Path(__file__).resolve().parent.parent

# (name in the package, file in the source collection). Grouped by licence, most permissive first.
PICKS = (
    # CC0 / public domain / CC-BY / BSD-or-CC0.
    ('forest_path_panorama.jpg', 'blender-data-5d6d11641b.jpg'),
    ('seaside_promenade_panorama.jpg', 'blender-data-61b703e1a2.jpg'),
    ('courtyard_panorama.jpg', 'blender-data-6f4116940f.jpg'),
    ('hotel_room_panorama.jpg', 'blender-data-c02771add2.jpg'),
    ('coffee_cup.jpg', 'pypi-66bc42758b.jpg'),
    ('motorcycle_garage.jpg', 'pypi-8f9ca52f45.jpg'),
    ('summer_palace_pagoda.jpg', 'pypi-a10a2730aa.jpg'),
    ('cameraman.jpg', 'pypi-bf593e6461.jpg'),
    ('astronaut.jpg', 'pypi-f118e3e57e.jpg'),
    ('grace_hopper.jpg', 'pypi-785864b67b.jpg'),
    ('chateau_de_maintenon.jpg', 'misc-small-1eecfff8d6.jpg'),
    ('panther_chameleon.jpg', 'misc-small-63a3c78b2b.jpg'),
    ('roebling_bridge_night.jpg', 'misc-small-8c1ac23b63.jpg'),
    ('room_with_windows.jpg', 'misc-small-42b2df951a.jpg'),
    ('blossom_branch.jpg', 'misc-small-4a72e10d94.jpg'),
    ('daisies.jpg', 'misc-small-d630890846.jpg'),
    # CC-BY-4.0 / CC-BY-SA / CC0, per file (Lomiri wallpapers).
    ('living_room_djembe.jpg', 'lomiri-220a58b7cc.jpg'),
    ('forest_stream.jpg', 'lomiri-37c0e70642.jpg'),
    ('tree_foliage_sky.jpg', 'lomiri-5127795401.jpg'),
    ('mountain_trail.jpg', 'lomiri-5a789aea4d.jpg'),
    ('autumn_mountains.jpg', 'lomiri-6d4a23f921.jpg'),
    ('bird_under_lamps.jpg', 'lomiri-7e944a4896.jpg'),
    ('sunset_hills.jpg', 'lomiri-803e625c9e.jpg'),
    ('bridge_cables_beach.jpg', 'lomiri-a5600d5782.jpg'),
    ('fig_in_bowl.jpg', 'lomiri-f39524e888.jpg'),
    # CC-BY-SA / CC-BY / CC0 / public domain, per file (GCompris, from Wikimedia Commons).
    ('alpaca.jpg', 'gc-animals-02c27533ae.jpg'),
    ('chickens.jpg', 'gc-animals-03a4181c55.jpg'),
    ('cheetah.jpg', 'gc-animals-2c31acfde9.jpg'),
    ('kitten.jpg', 'gc-animals-3f1b732470.jpg'),
    ('horse.jpg', 'gc-animals-44f99d9a5a.jpg'),
    ('meerkats.jpg', 'gc-animals-5e807f4035.jpg'),
    ('camels.jpg', 'gc-animals-70125a7ab2.jpg'),
    ('swans.jpg', 'gc-animals-747d294589.jpg'),
    ('red_panda.jpg', 'gc-animals-8f5a96d5f6.jpg'),
    ('giraffes.jpg', 'gc-animals-9afe4ee18b.jpg'),
    ('moose.jpg', 'gc-animals-b37ab61727.jpg'),
    ('dog.jpg', 'gc-animals-e22a8f8aae.jpg'),
    ('colosseum.jpg', 'gc-landmarks-8ef5d020ee.jpg'),
    ('neuschwanstein_castle.jpg', 'gc-landmarks-34e6b23664.jpg'),
    ('berlin_cathedral.jpg', 'gc-landmarks-39b7464f50.jpg'),
    ('mont_saint_michel.jpg', 'gc-landmarks-4b4289f424.jpg'),
    ('palais_des_papes_square.jpg', 'gc-landmarks-4bbcbac6f2.jpg'),
    ('castle_clinton_aerial.jpg', 'gc-landmarks-637f202629.jpg'),
    ('nagoya_castle.jpg', 'gc-landmarks-9b1d785672.jpg'),
    ('canyon_de_chelly.jpg', 'gc-landmarks-9c7d9dbbaf.jpg'),
    ('carcassonne_walls.jpg', 'gc-landmarks-9ddc89ee46.jpg'),
    ('brandenburg_gate.jpg', 'gc-landmarks-b84e799b71.jpg'),
    ('tower_bridge_night.jpg', 'gc-landmarks-e059c90a90.jpg'),
    ('night_street_lanterns.jpg', 'gc-misc-1f5ff4367a.jpg'),
    ('coral_reef.jpg', 'gc-misc-b33548d22b.jpg'),
)


def resize_short_side(img: Image.Image, short: int) -> Image.Image:
  """Scales `img` so that its shorter side is `short` px, keeping the aspect ratio."""
  w, h = img.size
  scale = short / min(w, h)
  size = (max(short, round(w * scale)), max(short, round(h * scale)))
  return img.resize(size, Image.LANCZOS)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--src', type=Path, default=ROOT.parent / 'shared' / 'data' / 'photos')
  parser.add_argument('--dst', type=Path, default=ROOT / 'ce_jax' / 'samples')
  args = parser.parse_args()

  with open(args.src / 'CREDITS.tsv', newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE)
    columns = list(reader.fieldnames)
    credits = {row['file']: row for row in reader}
  names = [name for name, _ in PICKS]
  if len(set(names)) != len(names):
    raise SystemExit('PICKS has duplicate names.')
  missing = [src for _, src in PICKS if src not in credits or not (args.src / src).is_file()]
  if missing:
    raise SystemExit(f'Not in {args.src} (or not credited there): {", ".join(missing)}')

  args.dst.mkdir(parents=True, exist_ok=True)
  for stale in sorted(set(p.name for p in args.dst.glob('*.jpg')) - set(names)):
    (args.dst / stale).unlink()

  rows = []
  for name, src in sorted(PICKS):
    with Image.open(args.src / src) as img:
      img = resize_short_side(img.convert('RGB'), SHORT_SIDE)
    img.save(args.dst / name, 'JPEG', quality=QUALITY, optimize=True)
    # Same columns as the source CREDITS.tsv; the last one maps back to the source file.
    rows.append({**credits[src], 'file': name, 'photos_file': src})

  with open(args.dst / 'CREDITS.tsv', 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(
        f,
        fieldnames=columns + ['photos_file'],
        delimiter='\t',
        quoting=csv.QUOTE_NONE,
        lineterminator='\n',
    )
    writer.writeheader()
    writer.writerows(rows)
  total = sum((args.dst / n).stat().st_size for n in names)
  print(f'Wrote {len(rows)} photos ({total / 1e6:.2f} MB) and CREDITS.tsv to {args.dst}')


if __name__ == '__main__':
  main()
