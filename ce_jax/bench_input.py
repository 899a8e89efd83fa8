"""Input pipeline throughput: the host loader, then `device_batches` (sharding + masks).

Tells whether training is input-bound: compare with the training step's images/s.

  python -m ce_jax.bench_input --dataset=samples --image_size=128 --batch_size=64 --batches=50
  python -m ce_jax.bench_input --dataset=folder:/path/to/photos --loader=threads   # no tf.data
  python -m ce_jax.bench_input --dataset=places365_small --data_dir=~/tensorflow_datasets
  python -m ce_jax.bench_input --dataset=places365_small --mock_places   # random 256x256 images
"""

import argparse
import contextlib
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top

from ce_jax import configs, input_pipeline, sharding


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


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='default', choices=configs.PRESETS)
  parser.add_argument(
      '--dataset', default='samples', help='samples | folder:PATH | places365_small'
  )
  parser.add_argument('--data_dir', default='', help='TFDS data_dir for places365_small')
  parser.add_argument('--split', default='train', choices=('train', 'test'))
  parser.add_argument('--image_size', type=int, default=128)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--batches', type=int, default=50, help='timed batches')
  parser.add_argument('--warmup', type=int, default=5, help='untimed batches first')
  parser.add_argument('--mask', default='center', help='center | block | freeform')
  parser.add_argument(
      '--loader',
      default=None,
      choices=input_pipeline.LOADERS,
      help='host loader (default: tf where TensorFlow is installed, else threads)',
  )
  parser.add_argument(
      '--mock_places',
      action='store_true',
      help='places365_small from tfds.testing.mock_data (random images)',
  )
  args = parser.parse_args(argv)

  config = configs.get(args.config)
  config.dataset = 'places365_small' if args.mock_places else args.dataset
  config.data_dir = args.data_dir
  config.image_size = args.image_size
  config.hole_size = min(config.hole_size, args.image_size // 2)
  config.batch_size = config.eval_batch_size = args.batch_size
  config.mask.kind = args.mask

  mock = contextlib.nullcontext()
  if args.mock_places:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    mock = tfds.testing.mock_data(num_examples=4 * args.batch_size)

  with mock:
    host, device, skipped = pipeline_rates(
        config, args.split, args.batches, args.warmup, args.loader
    )

  print(
      f'dataset={config.dataset}{" (mock)" if args.mock_places else ""} split={args.split} '
      f'image_size={args.image_size} batch_size={args.batch_size} mask={args.mask} '
      f'devices={jax.device_count()}x{jax.devices()[0].platform} '
      f'loader={args.loader or input_pipeline.default_loader()} '
      f'threads={input_pipeline.HOST_THREADS} cpus={os.cpu_count()}'
  )
  print(
      f'  host loader:     {host:8.1f} images/s  ({args.batches} batches after {args.warmup} '
      f'warm-up)'
  )
  print(f'  device_batches:  {device:8.1f} images/s  (sharded, masked, ready on the device)')
  print(f'  {skipped.report()}')


if __name__ == '__main__':
  main()
