"""What the report asks for: its Tables 1-3, their cells, its own numbers, and our protocols.

How to run them, and what each protocol costs: experiments/README.md.
"""

import dataclasses

import ml_collections

from ce_jax import cli, configs
from ce_jax.configs import study_cpu

PROTOCOLS = ('paper', 'quick', 'tiny', 'cpu')
# Scored beside every model on the same test images and masks, so that each number has a floor.
BASELINES = ('mean_fill', 'telea', 'harmonic')
ENCODER_LABELS = {'alexnet': 'AlexNet', 'vgg': 'VGG', 'resnet': 'ResNet', 'pathak': 'Pathak'}


@dataclasses.dataclass(frozen=True)
class Cell:
  """One (model, encoder, bottleneck) of a table: one training run."""

  model: str
  encoder: str
  bottleneck: int

  @property
  def name(self) -> str:
    return f'{self.model}_{self.encoder}_{self.bottleneck}'

  def label(self, bottleneck: bool = False) -> str:
    text = f'{self.model.upper()} {ENCODER_LABELS[self.encoder]}'
    return f'{text} {self.bottleneck}' if bottleneck else text


@dataclasses.dataclass(frozen=True)
class Table:
  title: str
  cells: tuple[Cell, ...]
  figure: tuple[str, tuple[str, ...]] | None  # (file stem, cell names in the report's order)
  by_bottleneck: bool = False  # Table 3: rows are (model, encoder), columns bottleneck sizes

  @property
  def cell_names(self) -> list[str]:
    return [c.name for c in self.cells]

  def cell(self, name: str) -> Cell:
    return next(c for c in self.cells if c.name == name)

  @property
  def bottlenecks(self) -> list[int]:
    return sorted({c.bottleneck for c in self.cells})

  def rows_by_model(self) -> list[tuple[str, list[Cell]]]:
    """(model label, its cells in bottleneck order) for Table 3's layout."""
    rows = {}
    for cell in self.cells:
      rows.setdefault(cell.label(), []).append(cell)
    return list(rows.items())


def _cells(models_encoders, bottlenecks=(4000,)):
  return tuple(Cell(m, e, b) for m, e in models_encoders for b in bottlenecks)


# The report's cells, plus GAN-VGG and GAN-Pathak, which it leaves out of Table 2.
TABLES = {
    1: Table(
        'Encoder architectures in the VAE (bottleneck 4000)',
        _cells([('vae', 'alexnet'), ('vae', 'vgg'), ('vae', 'resnet')]),
        ('figure4', ('vae_vgg_4000', 'vae_resnet_4000', 'vae_alexnet_4000')),
    ),
    2: Table(
        'Encoder architectures in the GAN (bottleneck 4000)',
        _cells([('gan', 'alexnet'), ('gan', 'resnet'), ('gan', 'vgg'), ('gan', 'pathak')]),
        ('figure5', ('gan_alexnet_4000', 'gan_resnet_4000')),
    ),
    3: Table(
        'Bottleneck size (500 / 2000 / 4000)',
        _cells(
            [('vae', 'vgg'), ('vae', 'resnet'), ('gan', 'alexnet'), ('gan', 'resnet')],
            (500, 2000, 4000),
        ),
        None,
        by_bottleneck=True,
    ),
}

# The report's numbers (context-encoders-report, Tables 1-3): cell -> (train loss, test loss).
# Table 3 does not say which split it shows; its 4000 column for GAN ResNet is Table 2's test
# loss, so it is set beside our test loss. (Its other 4000 entries differ from Tables 1-2.)
REPORT = {
    1: {
        'vae_alexnet_4000': (1894.29, 1882.63),
        'vae_vgg_4000': (1747.96, 1784.43),
        'vae_resnet_4000': (1725.11, 1769.02),
    },
    2: {'gan_alexnet_4000': (1798.83, 1768.69), 'gan_resnet_4000': (3030.98, 3038.22)},
    3: {
        'vae_vgg_500': (None, 1817.82),
        'vae_vgg_2000': (None, 1784.43),
        'vae_vgg_4000': (None, 1808.84),
        'vae_resnet_500': (None, 1819.92),
        'vae_resnet_2000': (None, 1813.5658),
        'vae_resnet_4000': (None, 1818.61),
        'gan_alexnet_500': (None, 2101.0),
        'gan_alexnet_2000': (None, 2237.55),
        'gan_alexnet_4000': (None, 1813.56),
        'gan_resnet_500': (None, 5470.18),
        'gan_resnet_2000': (None, 4704.27),
        'gan_resnet_4000': (None, 3038.22),
    },
}


def seeds(protocol: str, table: int) -> tuple[int, ...]:
  """The seeds each cell of `table` trains with: the cpu protocol's Table 2 three, its other
  tables two (their mean and standard deviation go in the tables); one elsewhere."""
  if protocol == 'cpu':
    return (0, 1, 2) if table == 2 else (0, 1)
  return (0,)


def short_steps(steps: int) -> int:
  """Table 3's length: 30 % of Tables 1-2's, the report's 30 epochs against 100."""
  return max(1, steps * 3 // 10)


def protocol_config(protocol: str, table: int) -> ml_collections.ConfigDict:
  """The training setup of `protocol` for the cells of `table` (experiments/README.md)."""
  short = table == 3  # the report trains Table 3 for 30 epochs instead of 100
  if protocol == 'cpu':
    c = configs.get('study_cpu')
    c.num_steps = short_steps(study_cpu.NUM_STEPS) if short else study_cpu.NUM_STEPS
  elif protocol == 'paper':
    c = configs.get('paper')
    c.num_epochs = 30 if short else 100
  elif protocol == 'quick':
    c = configs.get('paper')
    c.image_size = 128
    c.dataset = 'samples'
    c.train_examples = c.test_examples = -1
    c.num_epochs, c.num_steps = -1, 900 if short else 3000
    c.log_every, c.eval_every, c.checkpoint_every = 100, 1000, 500
  elif protocol == 'tiny':
    c = configs.get('tiny')
    c.num_steps = 30 if short else 100
    c.eval_every, c.checkpoint_every = 1000, 1000  # both also happen at the last step
  else:
    raise ValueError(f'Unknown protocol {protocol!r}; choose one of: {", ".join(PROTOCOLS)}.')
  return c


def cell_config(
    protocol: str,
    table: int,
    cell: Cell,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    overrides: dict | None = None,
) -> ml_collections.ConfigDict:
  """The config that trains `cell` of `table` under `protocol`.

  `overrides` ({'optim.b1': 0.9, ...}) set any field of every cell, last; a string is parsed for
  a non-string field, as on the command line.
  """
  c = protocol_config(protocol, table)
  c.model, c.encoder, c.bottleneck = cell.model, cell.encoder, cell.bottleneck
  if dataset:
    c.dataset = dataset
  if data_dir is not None:
    c.data_dir = data_dir
  for path, value in (overrides or {}).items():
    cli.set_field(c, path, value)
  return c
