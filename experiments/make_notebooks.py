"""Writes experiments/colab_tpu.ipynb and colab_gpu.ipynb from one list of cells, with nbformat.

  python -m experiments.make_notebooks

The two notebooks differ only in their runtime, install extra and compute dtype, so they are
generated rather than edited by hand. Their layout survives Colab's "Run all" and the restart
that Colab asks for when pip upgrades a package it had loaded:

* the install cell (tag `install`) comes first and only does what is missing: clone (or copy
  from Drive) the repository, `pip install -e ".[tpu]"` / `".[cuda12]"` unless ce_jax is
  installed already; no later cell uses a name it defines;
* a markdown cell then says to restart if Colab asks, and to Run all again;
* the parameters cell (tag `parameters`) holds every setting; the cells after it derive the
  rest from those (the set-up cell changes to the repository) and run the work as
  `!python -m ...` commands, each in a process of its own: a TPU, or most of a GPU's memory,
  belongs to one process at a time, and a new process sees what pip installed without a
  restart. The kernel itself imports no JAX.

tests/notebooks_test.py runs the install cell in one kernel and the rest in a fresh one, on the
CPU, with tiny settings.
"""

from pathlib import Path
import textwrap

import nbformat
from nbformat import v4

HERE = Path(__file__).resolve().parent
REPO_URL = 'https://github.com/ce-jax/ce_jax'
REPO_DIR = '/content/ce_jax'
INSTALL_TAG, PARAMETERS_TAG = 'install', 'parameters'

EXTRA = {'tpu': 'tpu', 'gpu': 'cuda12'}  # pip install -e ".[EXTRA]"
NAME = {'tpu': 'TPU', 'gpu': 'GPU'}
RUNTIME = {
    'tpu': '*Runtime > Change runtime type > v5e-1 TPU*',
    'gpu': '*Runtime > Change runtime type > T4 GPU* (or L4, A100, H100)',
}
DEVICES = {
    'tpu': (
        'The v5e-1 runtime is one TPU v5e chip. The notebook runs unchanged on eight chips '
        '(a v5e-8, v2-8 or v3-8 runtime, or a Cloud TPU VM): every command splits each batch '
        'over all the chips JAX sees, so a batch size must be a multiple of their number; '
        "the presets' (16 or 32) divide by 1 and by 8."
    ),
    'gpu': (
        "Every command splits each batch over all the GPUs JAX sees (one on Colab). Colab's "
        'own TensorFlow stays: ce_jax installs JAX for CUDA 12 beside it and keeps '
        'TensorFlow off the GPU.'
    ),
}
DTYPE = {
    'tpu': "'bfloat16'  # TPUs compute in bfloat16 natively; 'float32' for exact numbers",
    'gpu': "'float32'   # or 'bfloat16' on an L4, A100 or H100 (not a T4)",
}
TENSORFLOW = {
    'tpu': 'ce_jax needs no TensorFlow for the bundled photos or a folder (it has its own '
    'loader); Places365 does (TensorFlow Datasets).',
    'gpu': "It leaves Colab's TensorFlow and TensorFlow Datasets as they are (they feed "
    'Places365).',
}


def _wrap(text: str) -> str:
  return textwrap.fill(text, width=96, break_on_hyphens=False)


def _cells(kind: str) -> list:
  """The notebook's cells, in order."""
  name, extra = NAME[kind], EXTRA[kind]
  md, code = v4.new_markdown_cell, v4.new_code_cell
  return [
      md(f"""# Context Encoders in JAX on a Colab {name}

Trains a context encoder (a network that paints a hole in a photo from its surroundings) with
ce_jax, scores it beside the mean-fill and OpenCV Telea baselines, shows its inpaintings, and
fills a hole in **your own photo** with the model that ships with ce_jax. Repository:
{REPO_URL}.

1. Choose the runtime: {RUNTIME[kind]}.
2. *Runtime > Run all*. If Colab asks to restart the session after the install cell, restart
   and *Run all* again (see below).

By default everything is small and stays on the runtime's local disk: the `demo` preset trains
600 steps on the 50 photos bundled with ce_jax. Places365, the report's data (about
30 GB once prepared), and the report's tables are opt-in parameters."""),
      md(f"""## Install

Clones the repository into `REPO_DIR` (or copies your copy of it from Drive) and installs it
with `pip install -e ".[{extra}]"`: JAX for the {name} and ce_jax's packages. Run again, it
only checks: it finishes in seconds.

{_wrap(TENSORFLOW[kind])}"""),
      code(
          f"""# Installs only what is missing: running it again, after a restart too, is harmless.
# No cell below uses a name defined here: the parameters cell sets REPO_DIR again.
REPO_URL = '{REPO_URL}'  # the repository to clone
DRIVE_REPO = ''  # or a copy of it on Drive, copied instead: '/content/drive/MyDrive/ce_jax'
REPO_DIR = '{REPO_DIR}'  # where it goes

import importlib.metadata
import os
import shutil
import sys

if os.path.isdir(REPO_DIR):
  print(f'The repository is in {{REPO_DIR}} already.')
elif DRIVE_REPO:
  if DRIVE_REPO.startswith('/content/drive/'):
    from google.colab import drive
    drive.mount('/content/drive')
  shutil.copytree(DRIVE_REPO, REPO_DIR, ignore=shutil.ignore_patterns('.venv', 'runs'))
else:
  !git clone --quiet --depth=1 {{REPO_URL}} {{REPO_DIR}}
  if _exit_code:
    raise RuntimeError(f'git clone {{REPO_URL}} failed: its error is above.')
try:
  print(f'ce_jax {{importlib.metadata.version("ce_jax")}} is installed already.')
except importlib.metadata.PackageNotFoundError:
  !{{sys.executable}} -m pip install --quiet --editable "{{REPO_DIR}}[{extra}]"
  if _exit_code:
    raise RuntimeError('pip install failed: its error is above.')""",
          metadata={'tags': [INSTALL_TAG]},
      ),
      md("""**If Colab asks to restart the session** (a *Restart session* button under the cell
above: pip upgraded a package, NumPy for instance, that Colab had loaded already), restart it,
then *Runtime > Run all* again. Nothing is lost: the install cell then finds everything in
place, and every cell below sets up what it needs from the parameters."""),
      md("""## Parameters

Every setting of the notebook. The default run is the `demo` preset on the bundled photos,
with everything on the runtime's local disk (gone when the session ends: set `RUNS_DIR` to a
Drive folder to keep the runs; a rerun resumes from the last checkpoint)."""),
      code(
          f"""REPO_DIR = '{REPO_DIR}'  # the repository, where the install cell put it
RUNS_DIR = '/content/runs'  # runs and outputs; '/content/drive/MyDrive/ce_jax_runs': on Drive

# Training: a preset of ce_jax.configs, on the photos bundled with ce_jax or a folder of yours.
CONFIG = 'demo'  # demo (64/32 px, 600 steps), tiny, default or pathak (128/64), inpaint, paper
DATASET = 'samples'  # or a folder of photos: 'folder:/content/drive/MyDrive/photos'
MODEL = ''  # '' (the preset's), 'gan' or 'vae'
ENCODER = ''  # '' (the preset's), 'pathak', 'alexnet', 'vgg' or 'resnet'
NUM_STEPS = 0  # 0: the preset's (demo: 600)
BATCH_SIZE = 0  # 0: the preset's; split over the devices: a multiple of 8 runs on 1 and on 8
DTYPE = {DTYPE[kind]}

# Places365, the report's data (opt-in): TFDS downloads it and prepares about 30 GB in DATA_DIR,
# once. That fits the runtime's local disk, not a free Drive (15 GB).
PLACES365 = False  # True: the report's `paper` preset (256/64 px) on Places365
DATA_DIR = '/content/tensorflow_datasets'

# Inpaint your own photo.
INPAINT_PHOTO = ''  # a path, or '': upload one (outside Colab: a photo bundled with ce_jax)
INPAINT_MASK = 'center'  # 'center', 'x,y,w,h' in the photo's pixels, or a mask PNG (white = hole)
INPAINT_MODEL = 'pretrained'  # 'pretrained' (ships with ce_jax, 128/64) or 'run' (trained here)

# The report's tables (opt-in): experiments.sweep trains every cell of one table.
SWEEP_TABLE = 0  # 1, 2 or 3
SWEEP_PROTOCOL = 'quick'  # quick (128/64 on DATASET), paper (Places365 as above), tiny""",
          metadata={'tags': [PARAMETERS_TAG]},
      ),
      md(f"""## Set up

Mounts Drive if a path above is on it, changes to the repository, works out the run's flags
and folder, and shows the accelerator. JAX looks at it in a process of its own: the {name}
belongs to one process at a time, and each command below starts its own.

{_wrap(DEVICES[kind])}"""),
      code("""import os

paths = (RUNS_DIR, DATASET.removeprefix('folder:'), DATA_DIR, INPAINT_PHOTO)
if any(path.startswith('/content/drive/') for path in paths):
  from google.colab import drive
  drive.mount('/content/drive')
os.chdir(REPO_DIR)  # `python -m ce_jax...` and `python -m experiments...` run from here
os.makedirs(RUNS_DIR, exist_ok=True)

# The run: its flags, and its folder (a rerun with the same settings resumes it).
config, dataset = ('paper', 'places365_small') if PLACES365 else (CONFIG, DATASET)
train_flags = f'--config={config} --dataset="{dataset}" --dtype={DTYPE}'
for flag, value in (('model', MODEL), ('encoder', ENCODER), ('num_steps', NUM_STEPS),
                    ('batch_size', BATCH_SIZE)):
  if value:
    train_flags += f' --{flag}={value}'
if PLACES365:
  train_flags += f' --data_dir="{DATA_DIR}"'
run = '_'.join(v for v in (config, MODEL, ENCODER) if v)
if dataset.startswith('folder:'):
  run += '_' + os.path.basename(dataset.rstrip('/'))
workdir = f'{RUNS_DIR}/{run}'

!python -c "import jax; print(jax.device_count(), 'x', jax.devices()[0].device_kind)"
if _exit_code:
  raise RuntimeError('JAX does not start: its error is above.')"""),
      md(f"""## Data

The bundled photos and a folder need nothing. With `PLACES365 = True` (or the `paper`
protocol of a table), TensorFlow Datasets downloads Places365 and prepares it in `DATA_DIR`:
about 30 GB, once (not timed on Colab).

{_wrap(TENSORFLOW[kind])}"""),
      code("""import importlib.util
import sys

if PLACES365 or (SWEEP_TABLE and SWEEP_PROTOCOL == 'paper'):
  if importlib.util.find_spec('tensorflow') is None:  # Colab has it; elsewhere the tf extra
    !{sys.executable} -m pip install --quiet --editable "{REPO_DIR}[tf]"
  elif importlib.util.find_spec('tensorflow_datasets') is None:
    !{sys.executable} -m pip install --quiet "tensorflow-datasets>=4.9.7,<5"
  prepare = ('import tensorflow_datasets as tfds; '
             f"tfds.builder('places365_small', data_dir={DATA_DIR!r}).download_and_prepare()")
  !python -c "{prepare}"
  if _exit_code:
    raise RuntimeError('Preparing Places365 failed: its error is above.')
else:
  print(f'Training on {DATASET}: nothing to prepare.')"""),
      md("""## Train

`python -m ce_jax.train` with the preset and the parameters' flags, into its own folder under
`RUNS_DIR`. It evaluates on the held-out photos as it goes and saves orbax checkpoints: run the
cell again, after a disconnect too, and it resumes from the last one."""),
      code("""print(f'python -m ce_jax.train {train_flags} --workdir="{workdir}"')
!python -m ce_jax.train {train_flags} --workdir="{workdir}"
if _exit_code:
  raise RuntimeError('Training failed: its error is above.')"""),
      md("""## Restore and evaluate

`python -m ce_jax.evaluate` restores the generator alone from the last checkpoint, scores it on
the held-out photos beside the mean-fill and Telea baselines (the same holes for all three), and
draws the first ones: original | masked | model | mean fill | Telea."""),
      code("""import os
from pathlib import Path
from IPython.display import Image, display

!python -m ce_jax.evaluate --workdir="{workdir}"
if _exit_code:
  raise RuntimeError('Evaluation failed: its error is above.')
grid = max(Path(workdir, 'eval').glob('step_*_test.png'), key=os.path.getmtime)
display(Image(filename=grid))"""),
      md("""## Inpaint your own photo

Upload a photo (jpg, png, webp or bmp, any size), or set `INPAINT_PHOTO` to one. `python -m
ce_jax.inpaint` paints the hole (`INPAINT_MASK`) with the model that ships with ce_jax (a U-Net
context encoder trained on 1,914 photos: `ce_jax/pretrained/MODEL_CARD.md`), or with the run
above (`INPAINT_MODEL = 'run'`); the pixels away from the hole keep their exact values."""),
      code("""import os

photo = INPAINT_PHOTO
if not photo:
  try:
    from google.colab import files
  except ImportError:  # not on Colab: a photo bundled with ce_jax
    photo = os.path.join(REPO_DIR, 'ce_jax', 'samples', 'dog.jpg')
  else:
    uploads = os.path.join(RUNS_DIR, 'uploads')
    os.makedirs(uploads, exist_ok=True)
    os.chdir(uploads)  # files.upload() saves into the current folder
    try:
      uploaded = files.upload()  # choose a photo
    finally:
      os.chdir(REPO_DIR)
    name = next(iter(uploaded))
    photo = os.path.join(uploads, os.path.basename(name))
    with open(photo, 'wb') as f:
      f.write(uploaded[name])
print(photo)"""),
      code("""import os
from IPython.display import Image, display

model = workdir if INPAINT_MODEL == 'run' else 'pretrained'
out = os.path.join(RUNS_DIR, 'inpainted')
flags = f'--workdir="{model}" --input="{photo}" --output="{out}" --mask="{INPAINT_MASK}"'
!python -m ce_jax.inpaint {flags}
if _exit_code:
  raise RuntimeError('Inpainting failed: its error is above.')
stem = os.path.splitext(os.path.basename(photo))[0]
display(Image(filename=os.path.join(out, f'{stem}_filled.png')))"""),
      md("""## Reproduce a table of the report (opt-in)

With `SWEEP_TABLE` = 1, 2 or 3, `python -m experiments.sweep` trains and evaluates every cell
of that table in its own folder under `RUNS_DIR/experiments` (a rerun resumes and skips what is
done), then writes the table beside the report's numbers, its plot and a grid of inpaintings.
`quick` is a small protocol on the bundled photos; `paper` is the report's own (Places365,
256/64 px). Neither has been timed on Colab yet (experiments/RESULTS.md says what has)."""),
      code("""from pathlib import Path
from IPython.display import Image, Markdown, display

if SWEEP_TABLE:
  root = f'{RUNS_DIR}/experiments'
  flags = f'--table={SWEEP_TABLE} --protocol={SWEEP_PROTOCOL} --root="{root}" ' + (
      f'--data_dir="{DATA_DIR}"' if SWEEP_PROTOCOL == 'paper' else f'--dataset="{DATASET}"')
  !python -m experiments.sweep {flags}
  if _exit_code:
    raise RuntimeError('The sweep failed: its error is above.')
  out = Path(root, f'table{SWEEP_TABLE}', SWEEP_PROTOCOL)
  display(Markdown((out / f'table{SWEEP_TABLE}.md').read_text()))
  display(Image(filename=out / f'table{SWEEP_TABLE}.png'), Image(filename=out / 'grid.png'))
else:
  print('SWEEP_TABLE = 0: no table of the report this time.')"""),
  ]


def notebook(kind: str) -> nbformat.NotebookNode:
  """The `kind` ('tpu' or 'gpu') notebook."""
  nb = v4.new_notebook(cells=_cells(kind))
  for i, cell in enumerate(nb.cells):
    cell['id'] = f'{kind}-{i:02d}'  # stable ids: regenerating changes nothing
  nb.metadata = {
      'accelerator': NAME[kind],
      'colab': {'provenance': [], 'gpuType': {'tpu': 'V5E1', 'gpu': 'T4'}[kind]},
      'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
      'language_info': {'name': 'python'},
  }
  nbformat.validate(nb)
  return nb


def main():
  for kind in ('tpu', 'gpu'):
    path = HERE / f'colab_{kind}.ipynb'
    nbformat.write(notebook(kind), str(path))
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
