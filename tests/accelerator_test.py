"""experiments/accelerator_run.sh, the one-call accelerator run, on the CPU at a tiny size and
without TensorFlow (the device has none): photos from one .npz, the speed row, one quick cell
trained, scored beside the classical fills and written under $OUT."""

import json
import os
import subprocess
import sys
import tarfile
import textwrap

from conftest import REPO, SAMPLES
from experiments import study_data

# Loaded by Python at start-up from PYTHONPATH: `import tensorflow` then fails, as on the device.
HIDE_TENSORFLOW = textwrap.dedent("""
    import importlib.machinery
    import sys

    class _NoTensorFlow(importlib.machinery.PathFinder):
      @classmethod
      def find_spec(cls, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
          return None
        return super().find_spec(name, path, target)

    sys.meta_path[:] = [_NoTensorFlow if f is importlib.machinery.PathFinder else f
                        for f in sys.meta_path]
""")


def test_accelerator_run_at_tiny_size_on_the_cpu(tmp_path):
  npz = tmp_path / 'photos.npz'
  study_data.pack(SAMPLES, npz, side=36, quality=85)
  site = tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(HIDE_TENSORFLOW)
  out = tmp_path / 'out'
  env = dict(
      os.environ,
      OUT=str(out),
      STUDY_NPZ=str(npz),
      ACCEL_SIZE='tiny',
      ACCEL_CELLS='gan_pathak_4000',
      ACCEL_WHEELS=str(tmp_path / 'no_wheels'),  # this machine has the packages
      PYTHON=sys.executable,
      PYTHONPATH=str(site),
      JAX_PLATFORMS='cpu',
      XLA_FLAGS='--xla_backend_optimization_level=0',
  )
  r = subprocess.run(
      ['bash', 'experiments/accelerator_run.sh'],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
  assert 'TensorFlow is not installed' in r.stdout  # the threaded loader read the photos

  summary = json.loads((out / 'accelerator.json').read_text())
  assert summary['error'] is None
  assert summary['photos']['test'] > 0
  (speed,) = summary['speed']
  assert speed['dtype'] == 'float32' and speed['train_images_per_s'] > 0
  assert [(r['table'], r['cell'], r['steps']) for r in summary['runs_done_now']] == [
      (2, 'gan_pathak_4000', 2)
  ]
  with tarfile.open(out / 'results.tar.gz') as tar:
    member = tar.extractfile('results/quick/table2/gan_pathak_4000-seed0.json')
    result = json.loads(member.read())
  for test_set in ('heldout', 'samples'):
    scores = result['test'][test_set]
    assert set(scores) >= {'model', 'mean_fill', 'telea', 'harmonic', 'model_vs_harmonic'}
    assert scores['model']['images'] > 0 and scores['model']['l2'] > 0
  md = (out / 'RESULTS_quick.md').read_text()
  assert '| GAN Pathak | 4000 | 1 of 1 | 2 |' in md
  assert '| GAN AlexNet | 4000 | 0 of 1 | pending |' in md
  assert (out / 'log.txt').read_text().strip()
  assert len(list(out.iterdir())) <= 8  # what the device tool brings back
