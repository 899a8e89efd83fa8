"""How a table's results look: its markdown, its chart (drawn with Pillow: the project does not
depend on matplotlib) and its image grids. Reads the summary that `runner.run_table` builds."""

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ce_jax import images, visualize
from experiments import report

BASELINE_LABELS = {'mean_fill': 'mean fill', 'telea': 'Telea', 'harmonic': 'harmonic'}
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
)
BASELINE_COLOURS = {
    'mean_fill': (120, 120, 120),
    'telea': (188, 189, 34),
    'harmonic': (23, 190, 207),
}
GRID_MIN_SIZE = 128  # grid images are enlarged to at least this so that column labels fit


def number(x, digits: int = 4) -> str:
  if x is None:
    return '—'
  return f'{x:.{digits}g}' if abs(x) < 10**digits else f'{x:.0f}'


def duration(s) -> str:
  return '—' if s is None else (f'{s:.0f} s' if s < 120 else f'{s / 60:.1f} min')


# ------------------------------------------------------------------------------------------------
# Markdown.

METRICS_NOTE = (
    "Report loss: per image, the sum of squared errors over the hole's pixels in [-1, 1] "
    "(3 channels), averaged over the images, as in the report's tables. L1 % / L2 %: mean "
    'absolute / squared error over the hole in [0, 1], x100; PSNR over the hole; SSIM over the '
    'whole image. "train" is the final checkpoint scored on the training images (centre crop, '
    'no flip, inference mode).'
)
NOT_COMPARABLE_NOTE = (
    "The report's numbers come from its own protocol (Places365, 256/64, 5000 images, 100 "
    'epochs); only the paper protocol is comparable with them.'
)
RESULTS_HEADER = (
    '| model | bottleneck | steps | train report loss | test report loss | test L1 % | '
    'test L2 % | test PSNR dB | test SSIM | report: train loss | report: test loss | '
    'train time |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
)


def markdown_table(summary: dict) -> str:
  """Our numbers per cell, the baselines' on the same test images, and the report's."""
  spec = report.TABLES[summary['table']]
  lines = [
      f'# Table {summary["table"]}: {summary["title"]} ({summary["protocol"]} protocol)',
      '',
      _setup_sentence(summary),
      '',
      METRICS_NOTE,
      '',
      *_results_rows(summary),
  ]
  if spec.by_bottleneck:
    lines += ['', *_bottleneck_rows(summary)]
  if summary['protocol'] != 'paper':
    lines += ['', NOT_COMPARABLE_NOTE]
  return '\n'.join(lines) + '\n'


def _setup_sentence(summary: dict) -> str:
  """The protocol, the data, the devices and how long it all took."""
  c = summary['config']
  test_images, train_images = _images_scored(summary)
  length = f'{c["num_steps"]} steps' if c['num_steps'] > 0 else f'{c["num_epochs"]} epochs'
  return (
      f'{c["image_size"]}x{c["image_size"]} images, centre {c["hole_size"]}x{c["hole_size"]} '
      f'hole (overlap {c["overlap"]}), batch {c["batch_size"]}, {length}, dataset '
      f'`{c["dataset"]}` ({train_images} train / {test_images} test images scored), '
      f'{summary["devices"]}. Training the cells took '
      f'{duration(_total(summary, "train_seconds"))}, scoring them '
      f'{duration(_total(summary, "eval_seconds"))}; this invocation '
      f'{duration(summary["wall_seconds"])}.'
  )


def _images_scored(summary: dict) -> tuple[int | None, int | None]:
  """(test, train) images that each finished cell was scored on."""
  if not summary['baselines']:
    return None, None
  return next(
      (r['test']['images'], r['train']['images'])
      for r in summary['cells'].values()
      if r['finished']
  )


def _total(summary: dict, key: str) -> float:
  return sum(r.get(key, 0.0) for r in summary['cells'].values() if r['finished'])


def _row(*values) -> str:
  return '| ' + ' | '.join(str(v) for v in values) + ' |'


def _test_metrics(v: dict) -> list[str]:
  """Test report loss, L1 %, L2 %, PSNR, SSIM, formatted."""
  return [
      number(v['report_loss']),
      number(v['l1']),
      number(v['l2']),
      number(v['psnr']),
      number(v['ssim'], 3),
  ]


def _results_rows(summary: dict) -> list[str]:
  """The main table: a row per cell, then a row per baseline."""
  spec = report.TABLES[summary['table']]
  lines = list(RESULTS_HEADER)
  lines += [_cell_row(cell, summary['cells'][cell.name]) for cell in spec.cells]
  for b in report.BASELINES:
    v = (summary['baselines'] or {}).get(b)
    scores = _test_metrics(v) if v else ['—'] * 5
    lines.append(_row(f'{BASELINE_LABELS[b]} (baseline)', '—', '—', '—', *scores, '—', '—', '—'))
  return lines


def _cell_row(cell: report.Cell, r: dict) -> str:
  theirs = (number(r['report']['train'], 6), number(r['report']['test'], 6))
  if not r['finished']:
    return _row(cell.label(), cell.bottleneck, 'not run', *['—'] * 6, *theirs, '—')
  return _row(
      cell.label(),
      cell.bottleneck,
      r['step'],
      number(r['train']['report_loss']),
      *_test_metrics(r['test']),
      *theirs,
      duration(r['train_seconds']),
  )


def _bottleneck_rows(summary: dict) -> list[str]:
  """Table 3's layout: a row per (model, encoder), a column per bottleneck, ours / theirs."""
  spec = report.TABLES[summary['table']]
  lines = [
      "Test report loss by bottleneck size, ours / the report's:",
      '',
      '| model | ' + ' | '.join(str(b) for b in spec.bottlenecks) + ' |',
      '|---|' + '---:|' * len(spec.bottlenecks),
  ]
  for label, row in spec.rows_by_model():
    values = []
    for cell in row:
      r = summary['cells'][cell.name]
      ours = number(r['test']['report_loss']) if r['finished'] else 'not run'
      values.append(f'{ours} / {number(r["report"]["test"], 6)}')
    lines.append(f'| {label} | ' + ' | '.join(values) + ' |')
  return lines


# ------------------------------------------------------------------------------------------------
# Grids (the report's figures).


def save_grid(path, columns: dict) -> Path:
  """`visualize.save_grid` of uint8 image columns, small images enlarged (nearest)."""
  return visualize.save_grid(path, {k: _grid_images(v) for k, v in columns.items()})


def _grid_images(x: np.ndarray) -> np.ndarray:
  """uint8 rows -> [-1, 1] as `visualize.save_grid` takes them, at least GRID_MIN_SIZE px."""
  x = images.from_uint8(x)
  factor = max(1, math.ceil(GRID_MIN_SIZE / x.shape[1]))
  return x.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else x


def save_table_grids(summary: dict, out: Path) -> list[Path]:
  """grid.png (every cell and the baselines) and the report's figure for this table."""
  rows = {name: np.load(r['rows']) for name, r in summary['cells'].items() if r['finished']}
  if not rows:
    return []
  spec = report.TABLES[summary['table']]
  first = next(iter(rows.values()))  # every cell's rows hold the same images and masks
  labels = {c.name: c.label(spec.by_bottleneck) for c in spec.cells}
  columns = {'original': first['original'], 'masked': first['masked']}
  columns |= {labels[n]: r['model'] for n, r in rows.items()}
  columns |= {BASELINE_LABELS[b]: first[b] for b in report.BASELINES}
  written = [save_grid(out / 'grid.png', columns)]
  if spec.figure is not None:
    stem, names = spec.figure
    columns = {'original': first['original']}
    columns |= {labels[n]: rows[n]['model'] for n in names if n in rows}
    written.append(save_grid(out / f'{stem}.png', columns))
  return written


# ------------------------------------------------------------------------------------------------
# Charts.


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
    return ImageFont.load_default()


def _nice_ticks(top: float, n: int = 5) -> list[float]:
  """Round tick values from 0 to at least `top`."""
  top = top if top > 0 else 1.0
  raw = top / n
  mag = 10 ** math.floor(math.log10(raw))
  step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
  return [i * step for i in range(int(math.ceil(top / step)) + 1)]


class Chart:
  """A white canvas with a y axis from 0, a title, and a legend on the right."""

  W, H, LEFT, RIGHT, TOP, BOTTOM = 960, 540, 80, 210, 64, 70

  def __init__(self, title: str, ylabel: str, top: float):
    self.image = Image.new('RGB', (self.W, self.H), 'white')
    self.draw = ImageDraw.Draw(self.image)
    self.font, self.small = _font(15), _font(12)
    self.ticks = _nice_ticks(top * 1.05)
    self.ymax = self.ticks[-1]
    self.x0, self.x1 = self.LEFT, self.W - self.RIGHT
    self.y0, self.y1 = self.H - self.BOTTOM, self.TOP
    self.draw.text((self.LEFT, 12), title, fill='black', font=self.font)
    for t in self.ticks:
      y = self.y(t)
      self.draw.line([(self.x0, y), (self.x1, y)], fill=(228, 228, 228))
      self.draw.text((self.x0 - 8, y), number(t), fill='black', font=self.small, anchor='rm')
    self.draw.line([(self.x0, self.y0), (self.x1, self.y0)], fill='black')
    self.draw.line([(self.x0, self.y0), (self.x0, self.y1)], fill='black')
    self.draw.text((12, self.TOP - 24), ylabel, fill='black', font=self.small)
    self.legend = []

  @classmethod
  def fitting(cls, title: str, ylabel: str, series: dict, hlines: dict) -> 'Chart':
    """A chart whose y axis holds every value of `series` and `hlines`."""
    values = [v for vs in series.values() for v in vs if v is not None] + list(hlines.values())
    return cls(title, ylabel, max(values, default=1.0))

  def y(self, value: float) -> float:
    return self.y0 - (self.y0 - self.y1) * value / self.ymax

  def hline(self, value: float, colour, label: str) -> None:
    y = self.y(value)
    for x in range(self.x0, self.x1, 12):
      self.draw.line([(x, y), (min(x + 7, self.x1), y)], fill=colour, width=2)
    self.legend.append((colour, label, 'dash'))

  def baselines(self, hlines: dict, suffix: str = '') -> None:
    """A dashed line per baseline (name -> value), labelled 'NAME{suffix} VALUE'."""
    for name, v in hlines.items():
      self.hline(
          v,
          BASELINE_COLOURS.get(name, (0, 0, 0)),
          f'{BASELINE_LABELS.get(name, name)}{suffix} {number(v)}',
      )

  def xlabel(self, x: float, text: str) -> None:
    for i, part in enumerate(text.split('\n')):
      self.draw.text((x, self.y0 + 8 + 15 * i), part, fill='black', font=self.small, anchor='mt')

  def save(self, path) -> Path:
    y = self.TOP
    for colour, label, kind in self.legend:
      x = self.x1 + 20
      if kind == 'dash':
        self.draw.line([(x, y + 7), (x + 8, y + 7)], fill=colour, width=2)
        self.draw.line([(x + 12, y + 7), (x + 20, y + 7)], fill=colour, width=2)
      else:
        self.draw.rectangle([x, y, x + 20, y + 14], fill=colour)
      self.draw.text((x + 28, y), label, fill='black', font=self.small)
      y += 22
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    self.image.save(path)
    return path


def bar_chart(path, title: str, groups: list[str], series: dict, hlines: dict) -> Path:
  """Bars of each series (name -> value per group, None = missing) and dashed baselines."""
  chart = Chart.fitting(title, 'report loss (lower is better)', series, hlines)
  width = (chart.x1 - chart.x0) / max(len(groups), 1)
  bar = 0.7 * width / max(len(series), 1)
  for s, (name, vals) in enumerate(series.items()):
    colour = PALETTE[s % len(PALETTE)]
    chart.legend.append((colour, name, 'box'))
    for g, v in enumerate(vals):
      x = chart.x0 + g * width + 0.15 * width + s * bar
      if v is None:
        chart.draw.text(
            (x + bar / 2, chart.y0 - 4), 'not run', fill='gray', font=chart.small, anchor='mb'
        )
        continue
      chart.draw.rectangle([x, chart.y(v), x + bar - 2, chart.y0], fill=colour)
      chart.draw.text(
          (x + bar / 2, chart.y(v) - 3), number(v), fill='black', font=chart.small, anchor='mb'
      )
  for g, label in enumerate(groups):
    chart.xlabel(chart.x0 + (g + 0.5) * width, label)
  chart.baselines(hlines, ' (test)')
  return chart.save(path)


def line_chart(path, title: str, xs: list[str], series: dict, hlines: dict) -> Path:
  """A line with dots per series (name -> value per x, None = missing), dashed baselines."""
  chart = Chart.fitting(title, 'test report loss (lower is better)', series, hlines)
  step = (chart.x1 - chart.x0) / max(len(xs), 1)
  xpos = [chart.x0 + (i + 0.5) * step for i in range(len(xs))]
  for i, label in enumerate(xs):
    chart.xlabel(xpos[i], label)
  for s, (name, vals) in enumerate(series.items()):
    colour = PALETTE[s % len(PALETTE)]
    chart.legend.append((colour, name, 'box'))
    points = [(x, chart.y(v)) for x, v in zip(xpos, vals) if v is not None]
    if len(points) > 1:
      chart.draw.line(points, fill=colour, width=3)
    for x, y in points:
      chart.draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
  chart.baselines(hlines)
  return chart.save(path)


def plot_table(summary: dict, path) -> Path:
  """Tables 1-2: train and test report loss per cell; Table 3: test loss against bottleneck."""
  spec = report.TABLES[summary['table']]
  cells = summary['cells']
  hlines = {b: v['report_loss'] for b, v in (summary['baselines'] or {}).items()}
  title = f'Table {summary["table"]}: {spec.title}, {summary["protocol"]} protocol'

  def loss(name, split):
    return cells[name][split]['report_loss'] if cells[name]['finished'] else None

  if spec.by_bottleneck:
    series = {label: [loss(c.name, 'test') for c in row] for label, row in spec.rows_by_model()}
    return line_chart(path, title, [f'bottleneck {b}' for b in spec.bottlenecks], series, hlines)
  series = {
      f'{split} report loss': [loss(c.name, split) for c in spec.cells]
      for split in ('train', 'test')
  }
  return bar_chart(path, title, [c.label() for c in spec.cells], series, hlines)
