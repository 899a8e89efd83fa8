"""Every held-out number of the shipped model's card, in one command.

  python -m experiments.pretrained.heldout --workdir=ce_jax/pretrained \
      --out=experiments/pretrained/heldout

With the model's own dataset (`folder:/work/data/ce_train`, built by `make_training_set`) and
its held-out split **by group** (`input_pipeline.split_group`):
1. 128 px, centre hole: the model beside mean fill, Telea and the harmonic fill, every metric,
   and photo by photo against the harmonic fill (win rate, mean, worst tenth).
2. Robustness: the same photos made dark, low-contrast and grey (`evaluate --transform`), and
   the real low-light photos among them (mean brightness under 0.3).
3. The 10 held-out bundled samples (`--dataset=samples`).
4. At the photo's own resolution: `inpaint.Inpainter` with the centre hole (what `inpaint
   --mask=center` paints) on held-out photos of >= 256 px, against the harmonic fill and Telea
   at full resolution, scored over the pixels the model changed (the hole and its blended band).
5. The card's picture: dark and bright held-out photos, original | masked | model | harmonic |
   Telea, at 128 px.
Writes OUT/heldout.json and OUT/heldout.png and prints markdown tables.
"""

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from ce_jax import baselines, checkpoints, configs, evaluate, harmonic, images, inpaint, masks
from ce_jax import metrics, models, platform, steps, visualize

DARK = 0.3  # a held-out photo whose mean brightness in [0, 1] is below this is "low-light"
ROWS = ('model', 'harmonic', 'telea', 'mean_fill')


def table(results: dict, title: str) -> str:
  """One markdown table of the painters' means and the photo-by-photo line."""
  cols = [m for m in metrics.NAMES if m in results['model']]
  lines = [f'**{title}** ({results["model"]["images"]} photos)', '']
  lines += ['| | ' + ' | '.join(cols) + ' |', '|' + '---|' * (len(cols) + 1)]
  for r in ROWS:
    if r in results:
      lines.append(f'| {r} | ' + ' | '.join(f'{results[r][m]:.4g}' for m in cols) + ' |')
  if vs := results.get('model_vs_harmonic'):
    lines.append(
        f'\nmodel vs harmonic, PSNR photo by photo: wins on {100 * vs["win_rate"]:.0f} %, '
        f'mean {vs["mean_diff"]:+.2f} dB, worst tenth {vs["worst_tenth"]:+.2f} dB'
    )
  return '\n'.join(lines)


def subset(results: dict, keep: np.ndarray) -> dict:
  """The painters' means and the comparison over the photos where `keep` is True."""
  per = results['per_image']
  out = {r: {m: float(np.mean(np.asarray(per[r][m])[keep])) for m in per[r]} for r in ROWS}
  for r in ROWS:
    out[r]['images'] = int(keep.sum())
  out['model_vs_harmonic'] = metrics.compare(
      np.asarray(per['model']['psnr'])[keep], np.asarray(per['harmonic']['psnr'])[keep]
  )
  return out


def own_resolution(inpainter, files, transform=None) -> dict:
  """Model, harmonic and Telea on each photo's centre hole at its own resolution."""
  scores = {r: {'l1': [], 'psnr': []} for r in ('model', 'harmonic', 'telea')}
  band = inpainter.blend + 1
  for path in files:
    photo = inpaint.read_photo(Path(path))
    if min(photo.shape[:2]) < 256:
      continue
    if transform == 'dark':
      photo = np.rint(photo * 0.25).astype(np.uint8)
    hole = inpainter.hole('center', *photo.shape[:2])
    region = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 5) <= band
    fills = {
        'model': inpainter(photo, hole),
        'harmonic': harmonic.fill_photo(photo, hole),
        'telea': baselines.telea_photo(photo, hole),
    }
    for r, filled in fills.items():
      for m, v in metrics.photo_scores(filled, photo, region).items():
        scores[r][m].append(v)
  out = {r: {m: float(np.mean(v)) for m, v in s.items()} for r, s in scores.items()}
  out['images'] = len(scores['model']['psnr'])
  out['model_vs_harmonic'] = metrics.compare(scores['model']['psnr'], scores['harmonic']['psnr'])
  out['model_vs_telea'] = metrics.compare(scores['model']['psnr'], scores['telea']['psnr'])
  return out


def picture(config, variables, brightness, path: Path) -> None:
  """Rows: the 3 darkest held-out photos, 3 of middling light, two of those made dark (25 %)
  and one made grey; the same centre hole for every painter."""
  files = evaluate.input_pipeline.split_files(config, 'test')
  order = np.argsort(brightness)
  middle = len(order) // 2
  pick = [*order[:3], *order[middle : middle + 3]]
  unit = np.stack(
      [(images.crop(images.load_image(files[i]), config.image_size) + 1) / 2 for i in pick]
  )
  grey = np.repeat(np.sum(unit[5:6] * [0.299, 0.587, 0.114], -1, keepdims=True), 3, -1)
  photos = (2 * np.concatenate([unit, 0.25 * unit[3:5], grey]) - 1).astype(np.float32)
  n, size = len(photos), config.image_size
  corner = np.asarray(masks.center_corner(size, config.hole_size), np.int32)
  region = masks.place(masks.box_region(config.hole_size, config.mask.overlap), corner, size)
  region = np.broadcast_to(np.asarray(region)[None, ..., None], (n, size, size, 1))
  batch = masks.assemble(photos, region, np.broadcast_to(corner, (n, 2)), config, square=True)
  visualize.save_grid(
      path,
      {
          'original': batch['image'],
          'masked': masks.fill_hole(batch['image'], batch['mask'], config.fill),
          'ce_jax': steps.make_predict(config)(variables, batch),
          'harmonic': baselines.harmonic(batch),
          'telea': baselines.telea(batch),
      },
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default=checkpoints.PRETRAINED)
  parser.add_argument('--step', default=None)
  parser.add_argument('--out', type=Path, required=True)
  parser.add_argument('--dataset', default=None, help="default: the model's own dataset")
  parser.add_argument('--max_examples', type=int, default=-1, help='a quick check: fewer photos')
  args = parser.parse_args()
  platform.setup()
  config, variables, step = checkpoints.load_generator(args.workdir, args.step)
  if args.dataset:
    config.dataset = args.dataset
  every = tuple(baselines.BASELINES)
  results = {'workdir': args.workdir, 'step': step, 'model': models.describe(config)}
  run = lambda c, **kw: evaluate.evaluate(
      variables, c, baselines=every, per_image=True, max_examples=args.max_examples, **kw
  )
  results['heldout'] = run(config)
  for name in ('dark', 'low_contrast', 'grey'):
    results[name] = run(config, transform=name)
  light = np.asarray(results['heldout']['per_image']['brightness'])
  results['low_light'] = subset(results['heldout'], light < DARK)
  samples = configs.get('default')
  samples_config = config.copy_and_resolve_references()
  samples_config.dataset = samples.dataset
  samples_config.folder_test_fraction = samples.folder_test_fraction
  results['samples'] = run(samples_config)
  inpainter = inpaint.Inpainter(config, variables, step)
  files = evaluate.input_pipeline.split_files(config, 'test')
  files = files[: args.max_examples] if args.max_examples > 0 else files
  results['own_resolution'] = own_resolution(inpainter, files)
  results['own_resolution_dark'] = own_resolution(inpainter, files, 'dark')
  args.out.mkdir(parents=True, exist_ok=True)
  picture(config, variables, light, args.out / 'heldout.png')
  for r in results.values():
    if isinstance(r, dict):
      r.pop('per_image', None)
  (args.out / 'heldout.json').write_text(json.dumps(results, indent=1))
  for key, title in (
      ('heldout', 'Held-out split by group, 128 px, centre hole'),
      ('dark', 'The same photos at 25 % brightness'),
      ('low_contrast', 'The same photos at 30 % contrast'),
      ('grey', 'The same photos in grey'),
      ('low_light', f'The real low-light photos among them (mean brightness < {DARK})'),
      ('samples', 'The 10 held-out bundled samples'),
  ):
    print(table(results[key], title), '\n')
  for key in ('own_resolution', 'own_resolution_dark'):
    r = results[key]
    print(
        f'**{key}** ({r["images"]} photos): '
        + ', '.join(
            f'{p} PSNR {r[p]["psnr"]:.2f} L1 {r[p]["l1"]:.2f}'
            for p in ('model', 'harmonic', 'telea')
        )
        + f'; vs harmonic {r["model_vs_harmonic"]}',
        '\n',
    )
  print(f'wrote {args.out}/heldout.json and heldout.png')


if __name__ == '__main__':
  main()
