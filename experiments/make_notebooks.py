"""Writes experiments/colab_tpu.ipynb and colab_gpu.ipynb from one list of cells, with nbformat.

  python -m experiments.make_notebooks

The two notebooks differ only in their install cell and a few defaults, so they are generated
rather than edited by hand. Cells that only make sense on Colab (mounting Drive, pip installs)
start with `# colab-only` and carry the `skip-ci` tag: tests/experiments_test.py runs every other
code cell on the CPU with TINY = True.
"""

from pathlib import Path

import nbformat
from nbformat import v4

HERE = Path(__file__).resolve().parent
COLAB_ONLY = '# colab-only'

INSTALL = {
    'tpu': '''%pip install -q -r requirements-tpu.txt   # jax[tpu] and the pinned packages
%pip install -q --no-deps -e .''',
    'gpu': '''%pip install -q "jax[cuda12]==0.10.2"
# The pinned packages of requirements-tpu.txt, less its jax[tpu] lines.
!grep -v -e '^jax' -e '^-f' requirements-tpu.txt > /tmp/requirements-gpu.txt
%pip install -q -r /tmp/requirements-gpu.txt
%pip install -q --no-deps -e .''',
}

ACCELERATOR = {'tpu': ('TPU', 'Runtime > Change runtime type > TPU'),
               'gpu': ('GPU', 'Runtime > Change runtime type > a GPU (T4, L4, A100, H100)')}
DTYPE = {'tpu': "'bfloat16'  # TPUs compute in bfloat16 natively; 'float32' for exact numbers",
         'gpu': "'float32'   # or 'bfloat16' on an A100 / L4 / H100 (not a T4)"}


def cells(kind: str) -> list:
  name, runtime = ACCELERATOR[kind]
  md, code = v4.new_markdown_cell, v4.new_code_cell
  return [
      md(f'''# Context Encoders in JAX on a Colab {name}

Trains a context encoder (VAE or GAN, AlexNet / VGG / ResNet / Pathak encoder) with `ce_jax`,
data parallel over every {name} core, keeps its orbax checkpoints on Google Drive (a rerun
resumes), restores the generator, scores it beside the mean-fill and Telea baselines and shows
its inpaintings; the last cell reproduces one of the report's tables with `experiments.sweep`.

Choose the runtime first: *{runtime}*. Every setting is in the next cell; `TINY = True`
runs the whole notebook in a minute or two on the bundled photos (on any runtime, a CPU too).'''),
      code(f'''# Parameters: every tunable of this notebook.
TINY = False        # True: configs.get('tiny'), the bundled photos, TINY_STEPS steps (a smoke test)
TINY_STEPS = 20

REPO_URL = ''                                  # git URL of ce_jax to clone, or '' to copy DRIVE_REPO
DRIVE_REPO = '/content/drive/MyDrive/ce_jax'   # a copy of the repository on Google Drive
DRIVE_DIR = '/content/drive/MyDrive/ce_jax_runs'  # checkpoints, results, data: kept across sessions

PRESET = 'paper'    # ce_jax.configs preset: paper (the report's 256/64 Places365), default, pathak, demo
MODEL = 'gan'       # vae | gan
ENCODER = 'alexnet' # alexnet | vgg | resnet | pathak
BOTTLENECK = 4000   # 500 | 2000 | 4000 in the report
DATASET = 'places365_small'  # or 'folder:/content/drive/MyDrive/photos' (any folder of images)
DATA_DIR = DRIVE_DIR + '/tensorflow_datasets'  # where TFDS prepares Places365 (about 30 GB, once)
NUM_EPOCHS = 100    # the report: 100 (30 for its bottleneck study)
NUM_STEPS = -1      # > 0 wins over NUM_EPOCHS
BATCH_SIZE = 32     # global batch, split over all cores: a multiple of their number
DTYPE = {DTYPE[kind]}
OVERRIDES = {{}}      # any other config field, e.g. {{'optim.learning_rate': 1e-4}}
WORKDIR = f'{{DRIVE_DIR}}/{{MODEL}}_{{ENCODER}}_{{BOTTLENECK}}'
EVAL_EXAMPLES = -1  # test images to score (-1: the whole test split)

SWEEP_TABLE = None  # 1, 2 or 3: reproduce that table of the report (every cell: hours)
SWEEP_PROTOCOL = 'paper'  # paper | quick | tiny (see experiments/sweep.py)''',
           metadata={'tags': ['parameters']}),
      md('## Install\n\nMount Drive (checkpoints and data live there), fetch the repository, '
         'install the pinned packages. If pip asks to restart the session, do so and go on from '
         'the cell after this one.'),
      code(f'''{COLAB_ONLY}
from google.colab import drive
drive.mount('/content/drive')''', metadata={'tags': ['skip-ci']}),
      code(f'''{COLAB_ONLY}
import os, subprocess
if not os.path.isdir('/content/ce_jax'):
  if REPO_URL:
    subprocess.run(['git', 'clone', '-q', REPO_URL, '/content/ce_jax'], check=True)
  else:
    subprocess.run(['cp', '-r', DRIVE_REPO, '/content/ce_jax'], check=True)
%cd /content/ce_jax
{INSTALL[kind]}''', metadata={'tags': ['skip-ci']}),
      md(f'## The {name}\n\nJAX sees every core; training splits each batch over all of them '
         '(`jax.shard_map` over a `data` mesh axis, gradients averaged with `pmean`).'),
      code('''import jax
print(jax.devices())
print(f'{jax.device_count()} {jax.devices()[0].platform.upper()} device(s)')'''),
      md('## Configuration\n\nA preset from `ce_jax.configs` with the parameters applied.'),
      code('''from ce_jax import cli, configs, input_pipeline

if TINY:  # the tiny preset on the photos bundled in the package: runs anywhere
  config = configs.get('tiny')
  config.dataset = 'samples'
  config.num_steps = TINY_STEPS
  workdir = 'runs/notebook_tiny'
else:
  config = configs.get(PRESET)
  config.dataset, config.data_dir = DATASET, DATA_DIR
  config.num_epochs, config.num_steps = NUM_EPOCHS, NUM_STEPS
  config.batch_size = config.eval_batch_size = BATCH_SIZE
  config.dtype = DTYPE
  workdir = WORKDIR
config.model, config.encoder, config.bottleneck = MODEL, ENCODER, BOTTLENECK
for field, value in OVERRIDES.items():
  cli.set_field(config, field, value)
print(f'{config.model}/{config.encoder}, bottleneck {config.bottleneck}, '
      f'{config.image_size}/{config.hole_size} px, batch {config.batch_size}, {config.dataset}')'''),
      md('## Data\n\nPlaces365 is prepared once with TFDS into `DATA_DIR` on Drive (a long '
         'download); a folder of photos (`DATASET = \'folder:/content/drive/...\'`) needs '
         'nothing.'),
      code('''if config.dataset == 'places365_small':
  import tensorflow_datasets as tfds
  tfds.builder('places365_small', data_dir=config.data_dir).download_and_prepare()  # once
print({split: input_pipeline.num_examples(config, split) for split in ('train', 'test')}, 'images')'''),
      md('## Train\n\n`train_and_evaluate` trains on every core and saves orbax checkpoints in '
         '`workdir/checkpoints` (on Drive). Run the cell again, after a disconnect too: it '
         'resumes from the last checkpoint.'),
      code('''from ce_jax import evaluate, train

results = train.train_and_evaluate(config, workdir)
if results:
  print(evaluate.format_table(results))'''),
      md('## Restore and evaluate\n\nRestore the generator alone from the checkpoint, score it '
         'on the test split beside the baselines, and show the first inpaintings '
         '(original | masked | model | mean fill | Telea).'),
      code('''from pathlib import Path
from ce_jax import checkpoints, sharding

saved_config, gen_variables, step = checkpoints.load_generator(workdir)  # orbax: generator only
mesh = sharding.data_mesh()
gen_variables = jax.device_put(gen_variables, sharding.replicated(mesh))  # onto every core
grid = Path(workdir) / 'eval' / f'notebook_step_{step}.png'
# `config` rather than `saved_config`: the same networks, with this session's data paths.
scores = evaluate.evaluate(gen_variables, config, mesh=mesh, split='test',
                           max_examples=EVAL_EXAMPLES, baselines=('mean_fill', 'telea'),
                           grid_path=grid)
print(f'{saved_config.model}/{saved_config.encoder} at step {step}:')
print(evaluate.format_table(scores))'''),
      code('''def show(path):
  """The PNG inline in Jupyter / Colab; its path in plain Python."""
  try:
    from IPython.display import Image, display
  except ImportError:
    print(path)
    return
  display(Image(filename=str(path)))

show(grid)'''),
      md('## Reproduce a table of the report\n\nSet `SWEEP_TABLE` to 1, 2 or 3: every cell of '
         'that table trains in its own workdir under `DRIVE_DIR/experiments` (a rerun resumes), '
         'then the table, its plot and the report\'s figure are written beside them.'),
      code('''if SWEEP_TABLE:
  from experiments import sweep
  root = f'{DRIVE_DIR}/experiments'
  summary = sweep.run_table(SWEEP_TABLE, SWEEP_PROTOCOL, root,
                            data_dir=DATA_DIR if SWEEP_PROTOCOL == 'paper' else None)
  print(sweep.markdown_table(summary))
  show(sweep.table_dir(root, SWEEP_TABLE, SWEEP_PROTOCOL) / f'table{SWEEP_TABLE}.png')
  show(sweep.table_dir(root, SWEEP_TABLE, SWEEP_PROTOCOL) / 'grid.png')'''),
  ]


def notebook(kind: str) -> nbformat.NotebookNode:
  nb = v4.new_notebook(cells=cells(kind))
  for i, cell in enumerate(nb.cells):
    cell['id'] = f'{kind}-{i:02d}'  # stable ids: regenerating changes nothing
  nb.metadata = {
      'accelerator': ACCELERATOR[kind][0],
      'colab': {'provenance': []} | ({'gpuType': 'T4'} if kind == 'gpu' else {}),
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
