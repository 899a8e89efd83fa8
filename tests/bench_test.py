"""The benchmark command runs end to end on the tiny configuration (a smoke test: no speed claims)."""

import json

from conftest import run_module


def test_bench_command_writes_a_table_and_json(tmp_path):
  out = tmp_path / 'bench.json'
  r = run_module(
      '-m',
      'ce_jax.bench',
      '--config=tiny',
      '--models=gan,vae',
      '--encoders=pathak',
      '--steps=2',
      '--pipeline_batches=2',
      f'--json={out}',
      f'--profile_dir={tmp_path / "prof"}',
      timeout=300,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert '| gan | pathak |' in r.stdout and '| vae | pathak |' in r.stdout
  result = json.loads(out.read_text())
  assert [row['model'] for row in result['rows']] == ['gan', 'vae']
  for row in result['rows']:
    assert row['train_images_per_s'] > 0 and row['compile_s'] > 0
    assert row['step_gflops'] > 0  # XLA's cost analysis saw the convolutions
    assert row['mfu'] is None  # no known peak for a CPU
    assert row['eval_images_per_s'] > 0
  assert result['pipeline_images_per_s'] > 0 and result['inpaint_photos_per_s'] > 0
  for run in ('gan_pathak', 'vae_pathak'):  # one jax.profiler trace per (model, encoder)
    assert list((tmp_path / 'prof' / run).rglob('*.xplane.pb')), run


def test_bench_input_command_reads_config_flags():
  r = run_module(
      '-m',
      'ce_jax.bench_input',
      '--config=tiny',
      '--image_size=64',
      '--batch_size=8',
      '--batches=2',
      '--warmup=1',
      '--loader=threads',
      '--config.train_crop_min=0.5',
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'image_size=64 batch_size=8 mask=center' in r.stdout and 'loader=threads' in r.stdout
  assert 'host loader:' in r.stdout and 'device_batches:' in r.stdout
