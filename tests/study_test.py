"""The cpu protocol of the report's study: its configs, its runs, and RESULTS.md's tables rebuilt
from per-run result files (written here by hand, so no training runs)."""

import json

import numpy as np
from PIL import Image
import pytest

from conftest import SAMPLES
from experiments import report, study, study_data


def test_cpu_protocol_keeps_what_the_study_is_about():
  for table, spec in report.TABLES.items():
    for cell in spec.cells:
      c = report.cell_config('cpu', table, cell)
      assert (c.model, c.encoder, c.bottleneck) == (cell.model, cell.encoder, cell.bottleneck)
      assert (c.image_size, c.hole_size, c.mask.overlap, c.batch_size) == (64, 32, 0, 32)
      assert c.gen_width == c.disc_width == 16  # one width multiplier for every network
      assert c.dataset == 'folder:/work/data/ce_train'
  long = report.cell_config('cpu', 1, report.Cell('vae', 'vgg', 4000)).num_steps
  assert report.cell_config('cpu', 2, report.Cell('gan', 'vgg', 4000)).num_steps == long
  short = report.cell_config('cpu', 3, report.Cell('vae', 'vgg', 500)).num_steps
  assert short == long * 3 // 10  # the report's 100:30 epochs
  assert [len(report.seeds('cpu', t)) for t in (1, 2, 3)] == [2, 3, 2]


def test_plan_runs_every_cells_first_seed_first():
  runs = study.plan('cpu', (1, 2, 3))
  assert len(runs) == 3 * 2 + 4 * 3 + 12 * 2
  assert len(set((t, c.name, s) for t, c, s in runs)) == len(runs)
  first_seed = [s for _, _, s in runs[:19]]
  assert first_seed == [0] * 19 and {s for _, _, s in runs[19:38]} == {1}
  assert [(t, s) for t, _, s in runs[38:]] == [(2, 2)] * 4


def fake_run(table, cell, seed, l2, sharpness=1.0):
  """A result file as study.run_one writes it, with made-up scores."""
  scores = {'report_loss': l2 * 123, 'l1': l2 * 3, 'l2': l2, 'psnr': 20 - l2, 'ssim': 0.8}
  scores |= {'lpips': 0.1, 'sharpness': sharpness, 'images': 290}
  harmonic = dict(scores, l2=9.99, sharpness=0.25, psnr=15.5)
  return {
      'protocol': 'cpu',
      'table': table,
      'cell': cell.name,
      'model': cell.model,
      'encoder': cell.encoder,
      'bottleneck': cell.bottleneck,
      'seed': seed,
      'steps': 1000,
      'train_seconds': 600.0,
      'eval_seconds': 30.0,
      'train': dict(scores, l2=l2 - 0.5),
      'test': {
          'heldout': {
              'model': scores,
              'mean_fill': dict(scores, l2=12.5),
              'telea': dict(scores, l2=10.5),
              'harmonic': harmonic,
              'model_vs_harmonic': {'win_rate': 0.5, 'mean_diff': 0.1, 'worst_tenth': -1.0},
          },
          'samples': {'model': scores, 'harmonic': harmonic},
      },
  }


def write(results_dir, table, name, seed, l2, sharpness=1.0):
  cell = report.TABLES[table].cell(name)
  path = study.result_path(results_dir, 'cpu', table, cell, seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(fake_run(table, cell, seed, l2, sharpness)))


def test_tables_and_claims_rebuilt_from_the_result_files(tmp_path):
  md = tmp_path / 'RESULTS.md'
  names = ['status', 'claims', 'table1', 'table2', 'table3']
  md.write_text(
      'hand-written\n'
      + ''.join(f'{study.begin(n, "cpu")}\nold\n{study.end(n, "cpu")}\ntext {n}\n' for n in names)
  )
  # Table 1: AlexNet clearly worse than VGG and ResNet; VGG and ResNet within their spread.
  for seed, (a, v, r) in enumerate([(5.0, 4.0, 4.1), (5.2, 4.2, 4.0)]):
    write(tmp_path, 1, 'vae_alexnet_4000', seed, a, sharpness=0.5)
    write(tmp_path, 1, 'vae_vgg_4000', seed, v)
    write(tmp_path, 1, 'vae_resnet_4000', seed, r)
  write(tmp_path, 2, 'gan_alexnet_4000', 0, 4.5)  # one seed of three: no spread yet

  study.rebuild('cpu', tmp_path, md)
  text = md.read_text()
  assert text.startswith('hand-written\n') and '\nold\n' not in text and 'text table3' in text
  assert '**7 of 42 runs measured.**' in text
  assert 'Table 2: 1 of 12 runs measured' in text
  rows = {l.split(' | ')[0][2:]: l for l in text.splitlines() if l.startswith('| VAE AlexNet |')}
  assert '| 4000 | 2 of 2 | 1000 |' in rows['VAE AlexNet']
  assert '5.1 ± 0.14' in rows['VAE AlexNet']  # mean ± sample sd of the two seeds' L2 %
  assert '1882.63 (3.83 %)' in rows['VAE AlexNet']  # the report's loss as L2 %
  pending = [l for l in text.splitlines() if l.startswith('| GAN ResNet | 4000 |')]
  assert pending and all('pending' in l and '±' not in l for l in pending)
  assert '| harmonic (classical fill) |' in text and '9.99' in text

  claims = {c: (v, e) for c, v, e in study.claims(study.load_results(tmp_path, 'cpu'))}
  verdict = claims['VAE: the ResNet and VGG encoders beat AlexNet (Table 1)'][0]
  assert verdict == "yes, beyond the seeds' spread"
  assert claims['VAE: VGG and ResNet perform very similarly (Table 1)'][0] == 'yes'
  assert claims['Bottleneck 500 is the worst in every row (Table 3)'][0] == 'pending'
  assert claims['GAN fills are sharper than VAE fills (Figures 4-6)'][0] == 'pending'
  assert 'VAE AlexNet < ' not in text and 'VAE VGG < VAE AlexNet' in text  # beyond the spread

  with pytest.raises(ValueError, match='no <!-- BEGIN cpu:claims'):
    study.update_markdown('no markers', 'cpu', {'claims': 'x'})


def test_claims_that_fail_say_so(tmp_path):
  for seed in (0, 1):
    write(tmp_path, 1, 'vae_alexnet_4000', seed, 4.0 + 0.01 * seed, sharpness=0.5)
    write(tmp_path, 1, 'vae_vgg_4000', seed, 5.0, sharpness=0.5)
    write(tmp_path, 1, 'vae_resnet_4000', seed, 4.05 - 0.01 * seed, sharpness=0.5)
  for seed in (0, 1, 2):
    for name, l2 in (('alexnet', 4.6), ('resnet', 4.7), ('vgg', 4.5), ('pathak', 4.4)):
      write(tmp_path, 2, f'gan_{name}_4000', seed, l2 + 0.001 * seed, sharpness=0.9)
  claims = {c: v for c, v, _ in study.claims(study.load_results(tmp_path, 'cpu'))}
  assert claims['VAE: the ResNet and VGG encoders beat AlexNet (Table 1)'].startswith('no')
  assert claims[
      'GAN: AlexNet is the best encoder (Table 2; here among AlexNet, ResNet, VGG, Pathak)'
  ] == ("no, beyond the seeds' spread")
  assert claims['GAN fills are sharper than VAE fills (Figures 4-6)'] == (
      "yes, beyond the seeds' spread"
  )


def test_study_photos_pack_into_one_file_and_keep_their_split(tmp_path):
  info = study_data.pack(SAMPLES, tmp_path / 'photos.npz', side=48, quality=80)
  back = study_data.unpack(tmp_path / 'photos.npz', tmp_path / 'photos')
  assert info['photos'] == back['photos'] > 40 and info['test'] == back['test'] > 0
  with np.load(tmp_path / 'photos.npz', allow_pickle=False) as f:
    names = [str(n) for n in f['names']]
  for name in names[:5]:
    with Image.open(tmp_path / 'photos' / name) as img:
      assert min(img.size) == 48
