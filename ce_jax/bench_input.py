"""Input pipeline throughput: the host loader, then `device_batches` (sharding + masks).

Tells whether training is input-bound: compare with the training step's images/s.

  python -m ce_jax.bench_input --dataset=samples --image_size=128 --batch_size=64 --batches=50
  python -m ce_jax.bench_input --dataset=folder:/path/to/photos --loader=threads   # no tf.data
  python -m ce_jax.bench_input --dataset=places365_small --data_dir=~/tensorflow_datasets
  python -m ce_jax.bench_input --dataset=places365_small --mock_places   # random 256x256 images
"""

import contextlib
import os
import sys
import time

from absl import app, flags
import jax

from ce_jax import cli, input_pipeline, platform, sharding


def _rate(batches, n: int, warmup: int, batch_size: int, block=lambda b: b) -> float:
  """Images/s over `n` batches of the iterator `batches`, after `warmup` untimed ones."""
  for _ in range(warmup):
    block(next(batches))
  start = time.perf_counter()
  for _ in range(n):
    block(next(batches))
  return n * batch_size / (time.perf_counter() - start)


def pipeline_rates(
    config, split: str = 'train', batches: int = 50, warmup: int = 5, loader: str | None = None
):
  """(host loader images/s, device_batches images/s, SkipCounter) for `config`'s dataset."""
  host_batches, skipped = input_pipeline.create_dataset(
      config, split, repeat=True, loader=loader  # endless
  )
  host_iter = iter(host_batches)
  host = _rate(host_iter, batches, warmup, config.batch_size)
  host_iter.close()  # its threads stop before the next measurement
  device_iter = input_pipeline.device_batches(
      host_batches, config, sharding.data_mesh(), jax.random.key(0)
  )
  device = _rate(device_iter, batches, warmup, config.batch_size, jax.block_until_ready)
  device_iter.close()
  return host, device, skipped


FLAGS = flags.FLAGS


def define_flags():
  """--config and its fields (--dataset, --image_size, --batch_size, --mask, ...), and these."""
  cli.define_config_flags(aliases=('dataset', 'data_dir', 'image_size', 'batch_size', 'mask'))
  flags.DEFINE_enum('split', 'train', ['train', 'test'], 'Which split to read.')
  flags.DEFINE_integer('batches', 50, 'Timed batches.')
  flags.DEFINE_integer('warmup', 5, 'Untimed batches first.')
  flags.DEFINE_enum(
      'loader',
      None,
      input_pipeline.LOADERS,
      'Host loader (default: tf where TensorFlow is installed, else threads).',
  )
  flags.DEFINE_bool(
      'mock_places', False, 'places365_small from tfds.testing.mock_data (random images).'
  )


def main(argv):
  if len(argv) > 1:
    sys.exit(f'bench_input: unexpected arguments {argv[1:]}; flags look like --name=value.')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  try:
    config = cli.config_from_flags()
    platform.setup()
  except ValueError as e:
    sys.exit(f'bench_input: {e}')
  if FLAGS.mock_places:
    config.dataset = 'places365_small'
  config.hole_size = min(config.hole_size, config.image_size // 2)
  config.eval_batch_size = config.batch_size

  mock = contextlib.nullcontext()
  if FLAGS.mock_places:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    mock = tfds.testing.mock_data(num_examples=4 * config.batch_size)

  try:
    with mock:
      host, device, skipped = pipeline_rates(
          config, FLAGS.split, FLAGS.batches, FLAGS.warmup, FLAGS.loader
      )
  except ValueError as e:
    sys.exit(f'bench_input: {e}')

  print(
      f'dataset={config.dataset}{" (mock)" if FLAGS.mock_places else ""} split={FLAGS.split} '
      f'image_size={config.image_size} batch_size={config.batch_size} mask={config.mask.kind} '
      f'devices={jax.device_count()}x{jax.devices()[0].platform} '
      f'loader={FLAGS.loader or input_pipeline.default_loader()} '
      f'threads={input_pipeline.HOST_THREADS} cpus={os.cpu_count()}'
  )
  print(
      f'  host loader:     {host:8.1f} images/s  ({FLAGS.batches} batches after {FLAGS.warmup} '
      f'warm-up)'
  )
  print(f'  device_batches:  {device:8.1f} images/s  (sharded, masked, ready on the device)')
  print(f'  {skipped.report()}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
