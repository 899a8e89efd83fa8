"""Builds the training folder of the shipped model from the shared photo collections.

  python -m experiments.pretrained.make_training_set --out=/work/data/ce_train

Copies ../shared/data/photos (207 photos, per-file credits) and ../shared/data/research (1,717
research-use photos: BSDS500, CamVid, an ImageNet sample) into OUT/photos and OUT/research,
leaving out the source of every bundled sample in the samples' held-out split, so that the
bundled held-out photos stay unseen. `python -m ce_jax.train --dataset=folder:OUT` then holds out
15 % of OUT by a hash of each file's path relative to OUT (`input_pipeline._in_test_split`): the
fixed held-out split every number of the model card is measured on. The photos are research-use
only: they never go into the package.
"""

import argparse
import csv
from pathlib import Path
import shutil

from ce_jax import configs, images, input_pipeline

SHARED = Path(__file__).resolve().parents[3] / 'shared' / 'data'


def held_out_sample_sources() -> set[str]:
  """Files of ../shared/data/photos that became bundled samples of the held-out split."""
  fraction = configs.get('default').folder_test_fraction
  with open(input_pipeline.SAMPLES_DIR / 'CREDITS.tsv', newline='') as f:
    rows = list(csv.DictReader(f, delimiter='\t'))
  return {r['photos_file'] for r in rows if input_pipeline._in_test_split(r['file'], fraction)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shared', type=Path, default=SHARED, help='The shared data folder.')
  parser.add_argument('--out', type=Path, required=True, help='Folder to create.')
  args = parser.parse_args()
  excluded = held_out_sample_sources()
  copied = 0
  for name in ('photos', 'research'):
    src = args.shared / name
    for path in images.list_images(src):
      if name == 'photos' and path.name in excluded:
        continue
      dst = args.out / name / path.relative_to(src)
      dst.parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(path, dst)
      copied += 1
  print(f'{copied} photos in {args.out} ({len(excluded)} sources of held-out samples left out)')


if __name__ == '__main__':
  main()
