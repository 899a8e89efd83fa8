"""Reproduces the report's Tables 1-3 and Figures 4-7, one resumable run per table cell.

  python -m experiments.sweep --table=1|2|3|all [--protocol=paper|quick|tiny] [--cells=...]
  python -m experiments.sweep --figures [--protocol=...]
  python -m experiments.sweep --table=1 --config.dtype=bfloat16     # a field of every cell

The cpu protocol (the report's study on 2 CPU cores, with seeds: experiments/study.py) keeps one
result file per run in experiments/results/cpu/ and rebuilds RESULTS.md's tables from them:

  python -m experiments.sweep --protocol=cpu --table=all --root=/work/runs/study
  python -m experiments.sweep --protocol=cpu --rebuild      # RESULTS.md from the result files
  python -m experiments.sweep --protocol=cpu --figures --root=/work/runs/study

The protocols, what gets written where, and what each costs: experiments/README.md.
"""

from pathlib import Path
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from ce_jax import cli, platform
from experiments import figures, render, report, runner, study

FLAGS = flags.FLAGS


def define_flags():
  """Flags of this command (defined only when it runs, as ce_jax's commands do)."""
  flags.DEFINE_enum(
      'table', None, ['1', '2', '3', 'all'], "Which of the report's tables to reproduce."
  )
  flags.DEFINE_enum(
      'protocol',
      'paper',
      report.PROTOCOLS,
      'paper | quick | tiny | cpu (see experiments/README.md).',
  )
  flags.DEFINE_bool(
      'seeds',
      False,
      'Run every seed of every cell with one result file per run '
      '(experiments/study.py); always on for --protocol=cpu.',
  )
  flags.DEFINE_string(
      'results_dir', str(study.RESULTS_DIR), 'With --seeds: where the result files go.'
  )
  flags.DEFINE_string(
      'results_md',
      str(study.RESULTS_MD),
      'With --seeds: the page whose tables are rebuilt from the result files after each run '
      '(empty: none).',
  )
  flags.DEFINE_bool('rebuild', False, 'With --seeds: only rebuild --results_md from the files.')
  flags.DEFINE_integer('max_runs', None, 'With --seeds: stop after this many runs.')
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
  if FLAGS.table is None and not FLAGS.figures and not FLAGS.rebuild:
    sys.exit('sweep: give --table=1|2|3|all and/or --figures.')
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
    if FLAGS.seeds or FLAGS.rebuild or FLAGS.protocol == 'cpu':
      run_seeds(kwargs)
      return
    for table in (
        [1, 2, 3] if FLAGS.table == 'all' else [] if FLAGS.table is None else [int(FLAGS.table)]
    ):
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


def run_seeds(kwargs: dict) -> None:
  """--seeds (and --protocol=cpu): the runs not yet recorded, one result file each; RESULTS.md's
  tables rebuilt; the figures from the workdirs."""
  results_md = Path(FLAGS.results_md) if FLAGS.results_md else None
  if FLAGS.table is not None and not FLAGS.rebuild:
    tables = [1, 2, 3] if FLAGS.table == 'all' else [int(FLAGS.table)]
    done = study.run_study(
        FLAGS.protocol,
        FLAGS.root,
        tables,
        results_dir=FLAGS.results_dir,
        results_md=results_md,
        max_runs=FLAGS.max_runs,
        cells=FLAGS.cells,
        **kwargs,
    )
    print(f'{len(done)} runs done now; result files in {FLAGS.results_dir}/{FLAGS.protocol}')
  if results_md is not None:
    study.rebuild(FLAGS.protocol, FLAGS.results_dir, results_md)
    print(f'rebuilt the tables of {results_md}')
  if FLAGS.figures:
    written = study.draw_figures(FLAGS.protocol, FLAGS.root, FLAGS.results_dir, **kwargs)
    print('wrote ' + ', '.join(str(p) for p in written))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
