"""Builds the training folder of the shipped model from the shared photo collections.

  python -m experiments.pretrained.make_training_set --out=/work/data/ce_train

Copies ../shared/data/photos (207 photos, per-file credits) and ../shared/data/research (1,717
research-use photos: BSDS500, CamVid, an ImageNet sample) into OUT/photos and OUT/research,
leaving out the source of every bundled sample in the samples' held-out split (and the photos
of its group), so that the bundled held-out photos stay unseen. It writes OUT/groups.tsv: each
photo's group from CREDITS.tsv (a trailing number dropped: `windmill6` and `windmill7` are one
group). `python -m ce_jax.train --dataset=folder:OUT` then holds out 15 % of OUT **by group**
(`input_pipeline.split_group`: a groups.tsv group, else a sequence's frames together, so the
frames of one CamVid drive fall on one side): the fixed held-out split every number of the
model card is measured on. The photos are research-use only: they never go into the package.
"""

import argparse
import csv
from pathlib import Path
import re
import shutil

from ce_jax import configs, images, input_pipeline

SHARED = Path(__file__).resolve().parents[3] / 'shared' / 'data'


def held_out_sample_sources() -> set[str]:
  """Files of ../shared/data/photos that became bundled samples of the held-out split."""
  fraction = configs.get('default').folder_test_fraction
  with open(input_pipeline.SAMPLES_DIR / 'CREDITS.tsv', newline='') as f:
    rows = list(csv.DictReader(f, delimiter='\t'))
  return {
      r['photos_file']
      for r in rows
      if input_pipeline._in_test_split(input_pipeline.split_group(r['file'], {}), fraction)
  }


def photo_groups(photos: Path) -> dict[str, str]:
  """File name -> group of ../shared/data/photos, from its CREDITS.tsv (trailing digits dropped)."""
  with open(photos / 'CREDITS.tsv', newline='') as f:
    return {
        r['file']: re.sub(r'[-_ ]?\d+$', '', r['group']) or r['group']
        for r in csv.DictReader(f, delimiter='\t')
    }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shared', type=Path, default=SHARED, help='The shared data folder.')
  parser.add_argument('--out', type=Path, required=True, help='Folder to create.')
  args = parser.parse_args()
  groups = photo_groups(args.shared / 'photos')
  held_out = held_out_sample_sources()
  excluded_groups = {groups[f] for f in held_out}
  copied, excluded, rows = 0, 0, []
  for name in ('photos', 'research'):
    src = args.shared / name
    for path in images.list_images(src):
      if name == 'photos' and groups.get(path.name) in excluded_groups:
        excluded += 1
        continue
      rel = Path(name) / path.relative_to(src)
      dst = args.out / rel
      dst.parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(path, dst)
      copied += 1
      if name == 'photos':
        rows.append((rel.as_posix(), groups[path.name]))
  with open(args.out / input_pipeline.GROUPS_FILE, 'w', newline='') as f:
    writer = csv.writer(f, delimiter='\t', lineterminator='\n')
    writer.writerow(('file', 'group'))
    writer.writerows(rows)
  print(
      f'{copied} photos in {args.out} ({excluded} photos of the groups of {len(held_out)} '
      f'held-out samples left out); groups in {args.out / input_pipeline.GROUPS_FILE}'
  )


if __name__ == '__main__':
  main()
