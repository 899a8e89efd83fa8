"""ce_jax trains and evaluates without TensorFlow: a subprocess where `import tensorflow` fails."""

import textwrap

from conftest import run_module

# Runs first in the subprocess: TensorFlow and TFDS are not found (`import` raises
# ModuleNotFoundError, `importlib.util.find_spec` gives None), as on a machine without them; the
# script ends by printing the TensorFlow modules that got imported anyway.
HIDE_TENSORFLOW = textwrap.dedent("""
    import importlib.machinery
    import sys

    HIDDEN = ('tensorflow', 'tensorflow_datasets')

    class PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
      @classmethod
      def find_spec(cls, name, path=None, target=None):
        if name.split('.')[0] in HIDDEN:
          return None
        return super().find_spec(name, path, target)

    sys.meta_path[:] = [PathFinderWithoutTensorFlow if f is importlib.machinery.PathFinder else f
                        for f in sys.meta_path]

    def report_tensorflow_modules():
      print('TF_MODULES', sorted(m for m in sys.modules if m.split('.')[0] in HIDDEN))
""")


def test_places365_without_tensorflow_says_what_to_install():
  code = HIDE_TENSORFLOW + textwrap.dedent("""
      from ce_jax import configs, input_pipeline
      config = configs.get('tiny')
      config.dataset = 'places365_small'
      for call in (lambda: input_pipeline.create_dataset(config, 'train'),
                   lambda: input_pipeline.num_examples(config, 'test')):
        try:
          call()
        except ValueError as e:
          print('ERROR:', e)
      report_tensorflow_modules()
  """)
  r = run_module('-c', code, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  errors = [line for line in r.stdout.splitlines() if line.startswith('ERROR:')]
  expected = (
      'ERROR: places365_small needs TensorFlow and tensorflow-datasets: ' "pip install 'ce_jax[tf]'"
  )
  assert errors == [expected, expected]
  assert 'TF_MODULES []' in r.stdout


def test_train_runs_without_tensorflow(tmp_path):
  code = HIDE_TENSORFLOW + textwrap.dedent(f"""
      import runpy
      sys.argv = ['ce_jax.train', '--config=tiny', '--dataset=samples', '--num_steps=2',
                  '--log_every=1', '--eval_every=2', '--checkpoint_every=2',
                  '--workdir={tmp_path / 'run'}']
      try:
        runpy.run_module('ce_jax.train', run_name='__main__', alter_sys=True)
        status = 0
      except SystemExit as e:
        status = e.code
      report_tensorflow_modules()
      sys.exit(status)
  """)
  r = run_module('-c', code, timeout=240)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'TF_MODULES []' in r.stdout, r.stdout[-2000:]
  notices = [line for line in r.stderr.splitlines() if 'TensorFlow is not installed' in line]
  assert len(notices) == 1, r.stderr[-3000:]  # said once, however many datasets the run reads
  assert (tmp_path / 'run' / 'metrics.jsonl').exists()
