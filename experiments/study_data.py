"""The study's photos as ONE file, for a machine that has neither ../shared/data nor the network.

  python -m experiments.study_data pack --out=.study/photos.npz [--folder=/work/data/ce_train]
  python -m experiments.study_data unpack --npz=.study/photos.npz --out=/tmp/photos

`pack` reads the training folder that `experiments.pretrained.make_training_set` builds from
../shared/data (it builds it in a temporary folder when --folder does not exist), scales every
photo so that its shorter side is --side px (144 = 9/8 x 128: the most the 128-px crops of the
quick protocol use), re-encodes it as JPEG and stores the bytes of all of them in one .npz with
their relative paths, their groups (groups.tsv) and the held-out split BY GROUP that
`ce_jax.input_pipeline` draws from them (`split_group`, `folder_test_fraction`). `unpack`
writes the folder back (same relative paths, same groups.tsv) and checks that the loader's split
of it is the recorded one, so `--dataset=folder:OUT` trains and tests on exactly those photos.
Nothing is pickled: the file holds only numeric and string arrays.
"""

import argparse
import csv
import io
from pathlib import Path
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

from ce_jax import configs, images, input_pipeline

MAX_BYTES = 40 * 2**20


def _encode(path: Path, side: int, quality: int) -> bytes:
  img = images.to_rgb(Image.open(path))
  scale = side / min(img.size)
  if scale < 1:
    size = (max(side, round(img.width * scale)), max(side, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.LANCZOS)
  buf = io.BytesIO()
  img.save(buf, 'JPEG', quality=quality)
  return buf.getvalue()


def split_of(root: Path, names: list[str], fraction: float) -> np.ndarray:
  """True for the files `input_pipeline` holds out (by group) at this test fraction."""
  groups = input_pipeline.read_groups(root)
  in_test = input_pipeline._in_test_split  # pylint: disable=protected-access
  return np.array([in_test(input_pipeline.split_group(n, groups), fraction) for n in names], bool)


def pack(folder: Path, out: Path, side: int = 144, quality: int = 90) -> dict:
  """Writes `out` (.npz) from `folder`; returns what it holds."""
  files = images.list_images(folder)
  names = [p.relative_to(folder).as_posix() for p in files]
  groups = input_pipeline.read_groups(folder)
  fraction = configs.get('default').folder_test_fraction
  blobs = [_encode(p, side, quality) for p in files]
  offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
  arrays = {
      'jpeg': np.frombuffer(b''.join(blobs), np.uint8),
      'offsets': offsets,
      'names': np.array(names),
      'groups': np.array([groups.get(n, '') for n in names]),
      'test': split_of(folder, names, fraction),
      'test_fraction': np.float64(fraction),
      'side': np.int64(side),
  }
  out.parent.mkdir(parents=True, exist_ok=True)
  np.savez(out, **arrays)
  size = out.stat().st_size
  if size > MAX_BYTES:
    raise ValueError(
        f'{out} is {size / 2**20:.1f} MB, over {MAX_BYTES / 2**20:.0f} MB: lower --side or '
        '--quality.'
    )
  return {'photos': len(names), 'test': int(arrays['test'].sum()), 'bytes': size}


def unpack(npz: Path, out: Path) -> dict:
  """Writes the photos of `npz` under `out` with groups.tsv; checks the split; returns counts."""
  with np.load(npz, allow_pickle=False) as f:
    data = {k: f[k] for k in f.files}
  names, groups, offsets, blob = data['names'], data['groups'], data['offsets'], data['jpeg']
  out.mkdir(parents=True, exist_ok=True)
  for i, name in enumerate(names):
    path = out / str(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob[offsets[i] : offsets[i + 1]].tobytes())
  with open(out / input_pipeline.GROUPS_FILE, 'w', newline='') as f:
    writer = csv.writer(f, delimiter='\t', lineterminator='\n')
    writer.writerow(['file', 'group'])
    writer.writerows([str(n), str(g)] for n, g in zip(names, groups) if g)
  test = split_of(out, [str(n) for n in names], float(data['test_fraction']))
  if not np.array_equal(test, data['test']):
    raise ValueError(f'The held-out split of {out} differs from the one recorded in {npz}.')
  return {'photos': len(names), 'test': int(test.sum()), 'side': int(data['side'])}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest='command', required=True)
  p = sub.add_parser('pack', help='Build the .npz from the training folder.')
  p.add_argument('--folder', type=Path, default=Path('/work/data/ce_train'))
  p.add_argument('--out', type=Path, required=True)
  p.add_argument('--side', type=int, default=144, help='Shorter side of every photo, px.')
  p.add_argument('--quality', type=int, default=90, help='JPEG quality.')
  u = sub.add_parser('unpack', help='Write the photos of the .npz into a folder.')
  u.add_argument('--npz', type=Path, required=True)
  u.add_argument('--out', type=Path, required=True)
  args = parser.parse_args(argv)
  if args.command == 'pack':
    folder = args.folder
    with tempfile.TemporaryDirectory() as tmp:
      if not (folder / input_pipeline.GROUPS_FILE).is_file():
        folder = Path(tmp) / 'ce_train'
        subprocess.run(
            [sys.executable, '-m', 'experiments.pretrained.make_training_set', f'--out={folder}'],
            check=True,
        )
      info = pack(folder, args.out, args.side, args.quality)
    print(
        f'wrote {args.out}: {info["photos"]} photos ({info["test"]} held out by group), '
        f'{info["bytes"] / 2**20:.1f} MB'
    )
  else:
    info = unpack(args.npz, args.out)
    print(f'wrote {info["photos"]} photos ({info["test"]} held out) under {args.out}')


if __name__ == '__main__':
  main()
