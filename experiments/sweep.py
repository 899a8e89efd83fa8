"""Reproduces the report's Tables 1-3 and Figures 4-7, one resumable run per table cell.

  python -m experiments.sweep --table=1|2|3 [--protocol=paper|quick|tiny] [--cells=...]
  python -m experiments.sweep --figures [--protocol=...]
  python -m experiments.sweep --table=1 --config.dtype=bfloat16     # a field of every cell

The protocols, what gets written where, and what each costs: experiments/README.md.
"""

from pathlib import Path
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from ce_jax import cli, platform
from experiments import figures, render, report, runner

FLAGS = flags.FLAGS


def define_flags():
  """Flags of this command (defined only when it runs, as ce_jax's commands do)."""
  flags.DEFINE_enum('table', None, ['1', '2', '3'], "Which of the report's tables to reproduce.")
  flags.DEFINE_enum(
      'protocol', 'paper', report.PROTOCOLS, 'paper | quick | tiny (see experiments/README.md).'
  )
  flags.DEFINE_string('root', 'runs/experiments', 'Where the runs and tables go.')
  flags.DEFINE_string(
      'dataset',
      None,
      'samples | places365_small | folder:PATH (default: the '
      "protocol's: places365_small for paper, samples otherwise).",
  )
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir for places365_small.')
  flags.DEFINE_list('cells', [], 'Run only these cells of the table (e.g. vae_vgg_4000).')
  cli.define_field_flags('Change a field of every cell: --config.field=value.')
  flags.DEFINE_bool('figures', False, 'Write Figures 6 and 7 (needs Tables 1 and 2 done).')
  flags.DEFINE_bool('reevaluate', False, 'Score finished cells again instead of reusing results.')
  flags.DEFINE_string(
      'compilation_cache',
      None,
      'JAX persistent compilation cache (default ROOT/jax_cache; empty: none).',
  )


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax and clu are chatty at INFO
  if len(argv) > 1:
    sys.exit(f'sweep: unexpected arguments {argv[1:]}; flags look like --name=value.')
  if FLAGS.table is None and not FLAGS.figures:
    sys.exit('sweep: give --table=1|2|3 and/or --figures.')
  platform.setup()
  cache = FLAGS.compilation_cache
  cache = str(Path(FLAGS.root) / 'jax_cache') if cache is None else cache
  if cache:
    jax.config.update('jax_compilation_cache_dir', str(Path(cache).absolute()))
  try:
    kwargs = dict(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        overrides=config_flags.get_override_values(FLAGS['config']),
    )
    if FLAGS.table is not None:
      table = int(FLAGS.table)
      summary = runner.run_table(
          table,
          FLAGS.protocol,
          FLAGS.root,
          cells=FLAGS.cells,
          reevaluate=FLAGS.reevaluate,
          **kwargs,
      )
      out = runner.table_dir(FLAGS.root, table, FLAGS.protocol)
      print(render.markdown_table(summary))
      print(
          f'wrote {out}/table{table}.md, results.json, table{table}.png and grids '
          f'in {render.duration(summary["wall_seconds"])}'
      )
    if FLAGS.figures:
      figures.run_figures(FLAGS.protocol, FLAGS.root, **kwargs)
      print(f'wrote {figures.figures_dir(FLAGS.root, FLAGS.protocol)}/figure6.png, figure7.png')
  except (runner.Interrupted, ValueError, FloatingPointError) as e:
    sys.exit(f'sweep: {e}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
