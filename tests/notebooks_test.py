"""The Colab notebooks, run the way Colab runs them: the install cell, a restart, Run all.

Each notebook's install cell runs in one kernel and every later cell in a fresh one (as after the
restart Colab asks for), on the CPU, with the parameters cell rewritten for a tiny run on the
bundled photos. The install cell gets this checkout as its repository, where ce_jax is installed
already, so it reaches no network and installs nothing. The kernel is this interpreter (the
venv's), through a kernelspec of the test's own.
"""

import ast
import builtins
import json
import os
from pathlib import Path
import re
import sys
import time

from IPython.core import inputtransformer2
import nbclient
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
from experiments import make_notebooks  # pylint: disable=g-import-not-at-top,wrong-import-position

KINDS = ('tpu', 'gpu')
KERNEL = 'ce_jax_notebooks_test'
STEPS = 4
# The TPU notebook runs on 8 devices (a v5e-8 or v2-8), faked on the CPU; the GPU one on 1.
DEVICES = {'tpu': 8, 'gpu': 1}


def read(kind: str) -> nbformat.NotebookNode:
  return nbformat.read(REPO / 'experiments' / f'colab_{kind}.ipynb', as_version=4)


def tagged(nb, tag: str) -> int:
  """The index of the one cell tagged `tag`."""
  found = [i for i, c in enumerate(nb.cells) if tag in c.metadata.get('tags', [])]
  assert len(found) == 1, (tag, found)
  return found[0]


def set_parameters(cell, **values) -> None:
  """Rewrites the cell's `NAME = ...` lines (each must be there exactly once)."""
  for name, value in values.items():
    cell.source, n = re.subn(rf'^{name} = .*$', f'{name} = {value!r}', cell.source, flags=re.M)
    assert n == 1, name


def text(nb) -> str:
  """Everything the cells printed."""
  return ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.outputs)


def images(cell) -> int:
  return sum('image/png' in o.get('data', {}) for o in cell.outputs)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return os.environ.get('JAX_COMPILATION_CACHE_DIR') or str(tmp_path_factory.mktemp('jax_cache'))


@pytest.fixture
def kernel(tmp_path, monkeypatch, cache):
  """A kernelspec that runs this interpreter, first on JUPYTER_PATH; a CPU-only environment."""
  spec = tmp_path / 'jupyter' / 'kernels' / KERNEL
  spec.mkdir(parents=True)
  (spec / 'kernel.json').write_text(
      json.dumps(
          {
              'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
              'display_name': 'ce_jax (tests)',
              'language': 'python',
          }
      )
  )
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  # `!python -m ...` in the notebooks: this interpreter too.
  monkeypatch.setenv('PATH', f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '3')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', cache)
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_backend_optimization_level' not in xla_flags:  # tiny networks: compiling dominates
    monkeypatch.setenv('XLA_FLAGS', f'{xla_flags} --xla_backend_optimization_level=0'.strip())
  return KERNEL


def execute(cells, cwd: Path) -> nbformat.NotebookNode:
  """Runs the cells in a new kernel started in `cwd`; raises on the first failing cell."""
  nb = nbformat.v4.new_notebook(cells=[nbformat.from_dict(c) for c in cells])
  nbclient.NotebookClient(
      nb,
      kernel_name=KERNEL,
      timeout=300,
      startup_timeout=120,
      resources={'metadata': {'path': str(cwd)}},
  ).execute()
  return nb


@pytest.mark.parametrize('kind', KINDS)
def test_run_all_after_a_restart(kind, kernel, tmp_path, monkeypatch):
  del kernel
  if DEVICES[kind] > 1:
    monkeypatch.setenv(
        'XLA_FLAGS',
        f'{os.environ["XLA_FLAGS"]} ' f'--xla_force_host_platform_device_count={DEVICES[kind]}',
    )
  nb = read(kind)
  install, parameters = tagged(nb, make_notebooks.INSTALL_TAG), tagged(nb, 'parameters')
  set_parameters(nb.cells[install], REPO_DIR=str(REPO))
  runs = tmp_path / 'runs'
  set_parameters(
      nb.cells[parameters], REPO_DIR=str(REPO), RUNS_DIR=str(runs), CONFIG='tiny', NUM_STEPS=STEPS
  )
  start = time.perf_counter()
  first = execute(nb.cells[: install + 1], tmp_path)
  assert 'is installed already' in text(first), text(first)
  rest = execute(nb.cells[install + 1 :], tmp_path)  # a fresh kernel: as after a restart
  seconds = time.perf_counter() - start
  out = text(rest)
  assert re.search(rf'^{DEVICES[kind]} x cpu\r?$', out, re.M), out  # the accelerator check
  assert '--config=tiny' in out, out
  workdir = runs / 'tiny'
  assert (workdir / 'checkpoints' / str(STEPS)).is_dir()
  scores = json.loads((workdir / 'eval' / f'step_{STEPS}_test.json').read_text())
  assert scores['step'] == STEPS and scores['dataset'] == 'samples'
  assert all(scores[m]['images'] > 0 for m in ('model', 'mean_fill', 'telea')), scores
  assert '| telea |' in out, out
  assert (runs / 'inpainted' / 'dog_filled.png').is_file()
  shown = [images(c) for c in rest.cells if c.cell_type == 'code']
  assert sum(shown) == 2, shown  # the evaluation's grid and the inpainted photo
  assert 'SWEEP_TABLE = 0' in out
  print(f'{kind}: {seconds:.0f} s')


@pytest.mark.parametrize('kind', KINDS)
def test_install_cell_clones_the_repository_once(kind, kernel, tmp_path):
  del kernel
  nb = read(kind)
  cell = nb.cells[tagged(nb, make_notebooks.INSTALL_TAG)]
  set_parameters(cell, REPO_URL=str(REPO), REPO_DIR=str(tmp_path / 'ce_jax'))
  first = text(execute([cell], tmp_path))
  assert (tmp_path / 'ce_jax' / 'ce_jax' / '__init__.py').is_file()
  assert 'The repository is in' not in first, first
  again = text(execute([cell], tmp_path))
  assert f'The repository is in {tmp_path / "ce_jax"} already.' in again, again
  assert 'is installed already' in again, again


def _names(source: str) -> tuple[set, set]:
  """(names the cell binds, names it reads), `{NAME}` in its shell commands included."""
  tree = ast.parse(inputtransformer2.TransformerManager().transform_cell(source))
  bound, used = set(), set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Name):
      (bound if isinstance(node.ctx, ast.Store) else used).add(node.id)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      bound.update((a.asname or a.name).split('.')[0] for a in node.names)
    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      bound.add(node.name)
    elif isinstance(node, ast.arg):
      bound.add(node.arg)
  for line in source.splitlines():
    if line.lstrip().startswith('!'):
      used.update(re.findall(r'\{([A-Za-z_]\w*)', line))
  return bound, used


@pytest.mark.parametrize('kind', KINDS)
def test_no_cell_needs_the_install_cell(kind):
  nb = read(kind)
  cells = nb.cells[tagged(nb, make_notebooks.INSTALL_TAG) + 1 :]
  known = set(dir(builtins)) | {'_exit_code', 'get_ipython'}  # _exit_code: set by `!`
  for cell in cells:
    if cell.cell_type == 'code':
      bound, used = _names(cell.source)
      assert used <= known | bound, (used - known - bound, cell.source)
      known |= bound


@pytest.mark.parametrize('kind', KINDS)
def test_layout_install_restart_parameters(kind):
  nb = read(kind)
  install, parameters = tagged(nb, make_notebooks.INSTALL_TAG), tagged(nb, 'parameters')
  code = [i for i, c in enumerate(nb.cells) if c.cell_type == 'code']
  assert code[:2] == [install, parameters]
  between = ' '.join(c.source for c in nb.cells[install + 1 : parameters])
  assert 'restart' in between and 'Run all' in between
  source = nb.cells[install].source
  extra = {'tpu': '[tpu]', 'gpu': '[cuda12]'}[kind]
  assert f'--editable "{{REPO_DIR}}{extra}"' in source
  assert "REPO_URL = 'https://" in source and "DRIVE_REPO = ''" in source
  everything = '\n'.join(c.source for c in nb.cells)
  assert 'tensorflow-cpu' not in everything and 'requirements' not in everything
  assert not re.search(r'--set\b', everything)
  if kind == 'gpu':
    assert '[tf]' not in source
  params = nb.cells[parameters].source
  assert "CONFIG = 'demo'" in params and "DATASET = 'samples'" in params
  assert 'PLACES365 = False' in params and '30 GB' in params
  assert nb.metadata['accelerator'] == kind.upper()
  if kind == 'tpu':
    assert nb.metadata['colab']['gpuType'] == 'V5E1'
    assert 'Runtime > Change runtime type > v5e-1 TPU' in nb.cells[0].source


def test_every_preset_splits_over_1_and_8_devices():
  from ce_jax import configs  # pylint: disable=g-import-not-at-top

  for name in configs.PRESETS:  # the CONFIG parameter's choices
    config = configs.get(name)
    assert config.batch_size % 8 == 0 and config.eval_batch_size % 8 == 0, name


def test_notebooks_are_what_make_notebooks_writes():
  for kind in KINDS:
    assert read(kind) == make_notebooks.notebook(kind), 'run: python -m experiments.make_notebooks'
