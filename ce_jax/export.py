"""Exports a trained generator alone (no optimizer, no discriminator), for inpainting elsewhere.

  python -m ce_jax.export --workdir=runs/W --step=best --out=exported/ [--dtype=float16]

The export holds the generator's evaluation weights (the EMA when the run kept one), stored as
`--dtype`, beside the run's config; `evaluate`, `inpaint` and `checkpoints.load_generator` take
its folder wherever they take a workdir. The pretrained model in ce_jax/pretrained is one.

--out must be a new folder or an earlier export (never a file, a run, or a folder of other
files); the export is written beside it and swapped in only when complete, so a failed write
keeps the earlier export.
"""

import sys

from absl import app, flags, logging

from ce_jax import checkpoints, platform

FLAGS = flags.FLAGS


def define_flags():
  """Flags of this command (defined only when it runs, so modules import each other freely)."""
  flags.DEFINE_string('workdir', None, 'Training run directory (holds checkpoints/).')
  flags.DEFINE_string('step', 'latest', "Checkpoint: 'latest', 'best' or a step number.")
  flags.DEFINE_string('out', None, 'Folder to write the export to.')
  flags.DEFINE_enum('dtype', 'float16', ['float16', 'bfloat16', 'float32'], 'Storage precision.')


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO
  if len(argv) > 1:
    sys.exit(f'export: unexpected arguments {argv[1:]}; flags look like --name=value.')
  if not FLAGS.workdir or not FLAGS.out:
    sys.exit('export: --workdir and --out are required.')
  platform.setup()
  try:
    checkpoints.check_export_target(FLAGS.out)  # before the restore: a wrong --out fails at once
    config, variables, step = checkpoints.load_generator(FLAGS.workdir, FLAGS.step)
    checkpoints.export_generator(FLAGS.out, config, variables, step, FLAGS.dtype)
  except (ValueError, OSError) as e:
    sys.exit(f'export: {e}')
  print(f'exported step {step} of {FLAGS.workdir} to {FLAGS.out} ({FLAGS.dtype})')


if __name__ == '__main__':
  define_flags()
  app.run(main)
