"""Images from a source to device batches.

`create_dataset` builds the host side in tf.data: list or read the source, split, shuffle, decode,
rescale, crop, flip, scale to [-1, 1] and batch per host. `device_batches` turns those batches into
global `jax.Array`s sharded over the mesh's `data` axis and masks them on the device with
`masks.make_batch`, a few batches ahead of the training step.

Sources (`config.dataset`):

* ``samples``          the photos bundled in ce_jax/samples (no download).
* ``folder:PATH``      every jpg/jpeg/png/webp/bmp under PATH, recursively; unreadable files are
                       skipped and counted (`SkipCounter`), never fatal.
* ``places365_small``  Places365 (256x256) through TFDS, from `config.data_dir`; never downloaded
                       here.

Train batches are shuffled, repeated, randomly cropped and flipped, with the last partial batch
dropped. Test batches come in a fixed order, once, centre-cropped, with the last batch padded to a
full one and `valid` = 0 on the padding rows, so that an evaluation counts every image exactly once.
"""

from collections.abc import Callable, Iterator
import functools
import hashlib
import math
import os
from pathlib import Path
import queue
import threading

import jax
import ml_collections
import numpy as np
from PIL import Image, ImageOps
import tensorflow as tf

from ce_jax import masks, sharding

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp')
SAMPLES_DIR = Path(__file__).resolve().parent / 'samples'
TFDS_NAME = 'places365_small'
TFDS_SPLITS = {'train': 'train', 'test': 'validation'}
DATASET_FORMS = "'samples', 'folder:PATH' or 'places365_small'"
# Training rescales the shorter side to at most this times image_size (never below image_size), so
# that random crops move along both axes: 144 px for 128 px crops, the bundled photos' size.
TRAIN_SCALE = 9 / 8
# tf.data's private thread pool: all cores of a small machine, but never so many on a big host
# that it crowds out JAX's own threads.
TF_DATA_THREADS = max(2, min(os.cpu_count() or 2, 16))


class SkipCounter:
  """Files the pipeline could not decode, each counted once however many epochs see it.

  Decoding runs on tf.data's threads, so updates take a lock. The caller reads `count` and logs
  `report()`, e.g. once per evaluation or at the end of training.
  """

  def __init__(self, max_examples: int = 3):
    self._lock = threading.Lock()
    self._paths: set[str] = set()
    self._max_examples = max_examples
    self.examples: list[tuple[str, str]] = []  # (path, reason) of the first few skipped files

  def add(self, path: str, reason: str) -> None:
    with self._lock:
      if path not in self._paths:
        self._paths.add(path)
        if len(self.examples) < self._max_examples:
          self.examples.append((path, reason))

  @property
  def count(self) -> int:
    with self._lock:
      return len(self._paths)

  def report(self) -> str:
    """One line, e.g. "skipped 3 unreadable images (e.g. a.jpg: cannot identify image file)"."""
    with self._lock:
      n, examples = len(self._paths), list(self.examples)
    line = f'skipped {n} unreadable image{"" if n == 1 else "s"}'
    if examples:
      line += ' (e.g. ' + '; '.join(f'{Path(p).name}: {r}' for p, r in examples) + ')'
    return line


@functools.cache
def _hide_gpus_from_tensorflow() -> None:
  """TensorFlow only feeds tf.data: it must never reserve the accelerator's memory."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TensorFlow's devices were already initialised (by the caller).
    pass


# ------------------------------------------------------------------------------------------------
# Decoding files with Pillow.


def _to_rgb(img: Image.Image) -> Image.Image:
  """Any Pillow mode to 8-bit RGB; transparent pixels become white, not their hidden colour."""
  if img.mode.startswith('I'):  # 16/32-bit integer grey: scale 16-bit range to 8 bits
    img = Image.fromarray((np.asarray(img, np.float32) / 257).clip(0, 255).astype(np.uint8), 'L')
  if img.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in img.info:
    img = img.convert('RGBA')
    img = Image.alpha_composite(Image.new('RGBA', img.size, (255, 255, 255, 255)), img)
  return img if img.mode == 'RGB' else img.convert('RGB')


def load_image(path: str, min_side: int = 0) -> np.ndarray:
  """Decodes an image file to uint8 RGB (H, W, 3), oriented by its EXIF tag.

  With `min_side` > 0 the image is decoded or reduced to the smallest size whose shorter side is
  still >= min_side (JPEG: `draft` decodes at 1/2, 1/4 or 1/8 scale; others: `reduce` right after
  decoding), so that a 12000x12000 photo costs little memory and time. Raises on unreadable input.
  """
  with Image.open(path) as img:
    if min_side > 0:
      img.draft('RGB', (min_side, min_side))
    img = ImageOps.exif_transpose(img)  # loads the pixels; truncated files raise here
  if min(img.size) < 1:
    raise ValueError('image has no pixels')
  img = _to_rgb(img)
  factor = min(img.size) // min_side if min_side > 0 else 1
  if factor >= 2:
    img = img.reduce(factor)
  return np.asarray(img, np.uint8)


def _reason(e: Exception) -> str:
  """A short, path-free reason for the skip report."""
  text = str(e).splitlines()[0] if str(e) else type(e).__name__
  text = text.split(" '")[0] if text.startswith('cannot identify image file') else text
  return text[:120]


def _file_decoder(counter: SkipCounter, min_side: int) -> Callable[[tf.Tensor], tuple]:
  """path -> (uint8 image, ok) for tf.data; failures are counted and return ok=False."""

  def decode(path: bytes):
    path = path.decode()
    try:
      return load_image(path, min_side), True
    except Exception as e:  # pylint: disable=broad-except  # Any bad file is skipped, never fatal.
      counter.add(path, _reason(e))
      return np.zeros((1, 1, 3), np.uint8), False

  def fn(path):
    image, ok = tf.numpy_function(decode, [path], (tf.uint8, tf.bool), stateful=False)
    return tf.ensure_shape(image, (None, None, 3)), tf.ensure_shape(ok, ())

  return fn


# ------------------------------------------------------------------------------------------------
# Sources: each returns a dataset of records (file paths, encoded images) and record -> (image, ok).


def _in_test_split(rel_path: str, test_fraction: float) -> bool:
  """By a hash of the path: adding files never moves existing ones between train and test."""
  digest = hashlib.md5(rel_path.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2**64 < test_fraction


def list_images(root: Path) -> list[Path]:
  """Every image file under `root`, recursively, case-insensitive extensions, sorted."""
  return sorted(p for p in root.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _example_limit(config, split: str) -> int:
  return config.train_examples if split == 'train' else config.test_examples


def _split_paths(root: Path, config, split: str) -> list[str]:
  """This host's share of the files of `split` under `root` (hash split, then example limit)."""
  root = root.expanduser()
  if not root.is_dir():
    raise ValueError(f'Image folder {root} does not exist or is not a folder.')
  files = list_images(root)
  if not files:
    raise ValueError(f'No images ({"/".join(e[1:] for e in IMAGE_EXTENSIONS)}) under {root}.')
  frac = config.folder_test_fraction
  paths = [str(p) for p in files
           if _in_test_split(p.relative_to(root).as_posix(), frac) == (split == 'test')]
  if (limit := _example_limit(config, split)) >= 0:
    paths = paths[:limit]
  if not paths:
    raise ValueError(f'None of the {len(files)} images under {root} is in the {split!r} split '
                     f'(folder_test_fraction={frac}).')
  return paths[jax.process_index()::jax.process_count()]


def _folder_root(config) -> Path | None:
  if config.dataset == 'samples':
    return SAMPLES_DIR
  if config.dataset.startswith('folder:') and config.dataset[len('folder:'):]:
    return Path(config.dataset[len('folder:'):])
  return None


def num_examples(config, split: str) -> int:
  """Images in `split` over all hosts (before unreadable files are skipped): sizes an epoch."""
  if (root := _folder_root(config)) is not None:
    return len(_split_paths(root, config, split)) * jax.process_count()
  if config.dataset == TFDS_NAME:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    data_dir = os.path.expanduser(config.data_dir) if config.data_dir else None
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    n = builder.info.splits[TFDS_SPLITS[split]].num_examples
    limit = _example_limit(config, split)
    return min(n, limit) if limit >= 0 else n
  raise ValueError(f'Unknown dataset {config.dataset!r}; use {DATASET_FORMS}.')


def _folder_source(root: Path, config, split: str, counter: SkipCounter, min_side: int):
  paths = _split_paths(root, config, split)
  # Fail now, naming the folder, rather than yield nothing: decode until one file works.
  for path in paths:
    try:
      load_image(path, min_side)
      break
    except Exception as e:  # pylint: disable=broad-except
      counter.add(path, _reason(e))
  else:
    raise ValueError(f'No readable image in the {split!r} split of {root.expanduser()}: '
                     f'{counter.report()}.')
  return tf.data.Dataset.from_tensor_slices(paths), _file_decoder(counter, min_side), len(paths)


def _tfds_source(config, split: str, seed: int, shuffle: bool, options: tf.data.Options):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # heavy, only here

  data_dir = os.path.expanduser(config.data_dir) if config.data_dir else None
  builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
  tfds_split = TFDS_SPLITS[split]
  if (limit := _example_limit(config, split)) >= 0:
    tfds_split += f'[:{limit}]'
  try:
    records = builder.as_dataset(
        split=tfds.split_for_jax_process(tfds_split),
        shuffle_files=shuffle,
        decoders={'image': tfds.decode.SkipDecoding()},  # decode after the shuffle buffer
        read_config=tfds.ReadConfig(shuffle_seed=seed, options=options))
  except AssertionError:  # TFDS's "could not find data in DIR"
    where = data_dir or tfds.core.constants.DATA_DIR
    raise ValueError(
        f'{TFDS_NAME} is not prepared in {where}; download it once with `python -c "import '
        f"tensorflow_datasets as tfds; tfds.builder('{TFDS_NAME}', data_dir='{where}')"
        f'.download_and_prepare()"` (about 30 GB) or pass --data_dir.') from None

  def decode(image_bytes):
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False), tf.constant(True)

  return records.map(lambda ex: ex['image']), decode, None


# ------------------------------------------------------------------------------------------------
# Shared tail: crop, rescale, flip, scale to [-1, 1], batch.


def _crop(image: tf.Tensor, size: int, train: bool, seed: tf.Tensor,
          min_fraction: float = 0.0) -> tf.Tensor:
  """uint8 (H, W, 3) -> float32 (size, size, 3) in [-1, 1].

  Test: the centre crop after rescaling the shorter side to `size`. Train: a random crop after
  rescaling the shorter side to within [size, TRAIN_SCALE * size] (or, with `min_fraction` > 0,
  a random window of min_fraction..1 x the shorter side), and a random flip (stateless,
  from `seed`, so that a run is reproducible). Both cut the crop's window from the original and
  resize only the window: the same pixels for less work, whatever the image's aspect ratio.
  """
  hw = tf.shape(image)[:2]
  short = tf.reduce_min(hw)
  if train:
    offset_seed, flip_seed, scale_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  if train and min_fraction > 0:  # zoom: a window of a random fraction of the shorter side
    fraction = tf.random.stateless_uniform([], seed=scale_seed, minval=min_fraction, maxval=1.0)
  else:  # the window that becomes `size` px once the shorter side is rescaled to `target`
    target = tf.clip_by_value(short, size, math.ceil(TRAIN_SCALE * size)) if train else size
    fraction = size / tf.cast(target, tf.float32)
  side = tf.clip_by_value(tf.cast(tf.round(fraction * tf.cast(short, tf.float32)), tf.int32),
                          1, short)
  room = hw - side
  if train:
    u = tf.random.stateless_uniform([2], seed=offset_seed)
    offset = tf.minimum(tf.cast(u * tf.cast(room + 1, tf.float32), tf.int32), room)
  else:
    offset = room // 2
  window = tf.slice(image, [offset[0], offset[1], 0], [side, side, 3])
  window = tf.cond(side == size,
                   lambda: tf.cast(window, tf.float32),
                   lambda: tf.image.resize(window, (size, size), 'bilinear', antialias=True))
  window = tf.reshape(window, (size, size, 3))
  if train:
    window = tf.image.stateless_random_flip_left_right(window, seed=flip_seed)
  return tf.clip_by_value(window / 127.5 - 1.0, -1.0, 1.0)


def _pad_batch(images: tf.Tensor, batch: int) -> dict:
  """Pads a partial batch to `batch` rows; `valid` marks the real ones."""
  n = tf.shape(images)[0]
  images = tf.pad(images, [[0, batch - n], [0, 0], [0, 0], [0, 0]])
  valid = tf.concat([tf.ones([n]), tf.zeros([batch - n])], 0)
  return {'image': tf.ensure_shape(images, (batch,) + tuple(images.shape[1:])),
          'valid': tf.ensure_shape(valid, (batch,))}


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True  # the same seed gives the same batches; evaluation order is fixed
  options.threading.private_threadpool_size = TF_DATA_THREADS
  options.threading.max_intra_op_parallelism = 1
  return options


def validate(config) -> None:
  """One-line errors for data settings that would otherwise fail (or silently mislead) later."""
  for what in ('batch_size', 'eval_batch_size'):
    value = config[what]
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f'{what}={value!r} must be a positive integer.')
  if not 0.0 <= config.train_crop_min <= 1.0:
    raise ValueError(f'train_crop_min={config.train_crop_min} must be in [0, 1] (0 = rescale and '
                     'crop; f > 0 = a random window of f..1 x the shorter side).')
  if not 0.0 <= config.folder_test_fraction <= 1.0:
    raise ValueError(f'folder_test_fraction={config.folder_test_fraction} must be in [0, 1].')
  fill = config.fill
  if (not isinstance(fill, (tuple, list)) or len(fill) != 3
      or not all(isinstance(v, (int, float)) and -1.0 <= v <= 1.0 for v in fill)):
    raise ValueError(f'fill={fill!r} must be three numbers in [-1, 1] (an RGB colour).')


def host_batch_size(config, split: str) -> int:
  """This host's share of the global (train or eval) batch."""
  what = 'batch_size' if split == 'train' else 'eval_batch_size'
  batch, hosts = config[what], jax.process_count()
  if batch % hosts:
    raise ValueError(f'{what}={batch} does not divide by the {hosts} hosts.')
  return batch // hosts


def create_dataset(config, split: str, *, seed: int = 0, shuffle: bool | None = None,
                   repeat: bool | None = None, augment: bool | None = None
                   ) -> tuple[tf.data.Dataset, SkipCounter]:
  """Per-host batches {'image': (b, S, S, 3) float32 in [-1, 1], 'valid': (b,) float32}.

  `split` is 'train' or 'test'; b is the (eval) batch size over the number of hosts, S is
  `config.image_size`. shuffle, repeat and augment (random crop and flip) default to
  (split == 'train'); a stream that does not repeat pads its last batch (`valid` = 0), so that
  scoring the training split (shuffle=repeat=augment=False) sees every image once. Returns the
  dataset and the `SkipCounter` of files it could not read.
  """
  if split not in TFDS_SPLITS:
    raise ValueError(f"split must be 'train' or 'test', not {split!r}.")
  _hide_gpus_from_tensorflow()
  train = split == 'train'
  shuffle = train if shuffle is None else shuffle
  repeat = train if repeat is None else repeat
  augment = train if augment is None else augment
  size, batch = config.image_size, host_batch_size(config, 'train' if repeat else 'test')
  options = _options()
  counter = SkipCounter()

  name = config.dataset
  # Decode no smaller than the largest training window needs (a zoomed crop needs more pixels).
  min_side = math.ceil(size / config.train_crop_min if config.train_crop_min > 0
                       else TRAIN_SCALE * size)
  if (root := _folder_root(config)) is not None:
    records, decode, n = _folder_source(root, config, split, counter, min_side)
  elif name == TFDS_NAME:
    records, decode, n = _tfds_source(config, split, seed, shuffle, options)
  else:
    raise ValueError(f'Unknown dataset {name!r}; use {DATASET_FORMS}.')

  if shuffle:
    # File paths are small, so a folder is shuffled whole; TFDS examples through the buffer.
    records = records.shuffle(max(n or 0, config.shuffle_buffer), seed=seed,
                              reshuffle_each_iteration=True)
  if repeat:
    records = records.repeat()
  ds = records.enumerate()  # the element's position seeds its crop and flip
  ds = ds.map(lambda i, r: (i, *decode(r)), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.filter(lambda i, image, ok: ok)
  seed64 = tf.constant(seed, tf.int64)
  ds = ds.map(lambda i, image, ok: _crop(image, size, augment, tf.stack([seed64, i]),
                                         config.train_crop_min),
              num_parallel_calls=tf.data.AUTOTUNE)
  if repeat:
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(lambda images: {'image': images, 'valid': tf.ones([batch])})
  else:
    ds = ds.batch(batch).map(lambda images: _pad_batch(images, batch))
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options), counter


# ------------------------------------------------------------------------------------------------
# Device side.


def device_batches(dataset: tf.data.Dataset, config, mesh: jax.sharding.Mesh, key: jax.Array, *,
                   prefetch: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Global batches sharded over the mesh's `data` axis, masked on the device.

  Yields `masks.make_batch`'s dict (image, masked, mask, box, target, patch_mask) plus `valid`,
  the i-th batch masked with `fold_in(key, i)`. A background thread keeps `prefetch` batches
  ready, so the device never waits for the host.
  """
  global_batch = dataset.element_spec['image'].shape[0] * jax.process_count()
  what = 'batch_size' if global_batch == config.batch_size else 'eval_batch_size'
  sharding.check_divisible(global_batch, mesh, what)
  data_sharding = sharding.batch_sharding(mesh)
  key = jax.device_put(key, sharding.replicated(mesh))
  mask = _masker(ml_collections.FrozenConfigDict(config), mesh)

  def batches():
    for i, batch in enumerate(dataset.as_numpy_iterator()):
      yield mask(jax.make_array_from_process_local_data(data_sharding, batch['image']),
                 jax.make_array_from_process_local_data(data_sharding, batch['valid']), key, i)

  return _prefetch(batches(), prefetch)


@functools.lru_cache(maxsize=8)
def _masker(config: ml_collections.FrozenConfigDict, mesh) -> Callable:
  """The jitted masking step, compiled once per (config, mesh), not once per evaluation."""
  file_mask = (masks.load_mask_file(config.mask.file, config.image_size)
               if config.mask.kind == 'file' else None)

  @functools.partial(jax.jit, out_shardings=sharding.batch_sharding(mesh))
  def mask(images, valid, key, i):
    return {**masks.make_batch(images, jax.random.fold_in(key, i), config, file_mask),
            'valid': valid}

  return mask


_END = object()


class _Raised:
  """An error of the prefetch thread, on its way to the consumer."""

  def __init__(self, error: BaseException):
    self.error = error


def _prefetch(iterator: Iterator, size: int) -> Iterator:
  """Runs `iterator` up to `size` items ahead in a daemon thread; its errors re-raise here."""
  if size <= 0:
    yield from iterator
    return
  items = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        items.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def work():
    try:
      for item in iterator:
        if not put(item):
          return
      put(_END)
    except BaseException as e:  # pylint: disable=broad-except  # handed to the consumer
      put(_Raised(e))

  worker = threading.Thread(target=work, daemon=True, name='device_batches')
  worker.start()
  try:
    while (item := items.get()) is not _END:
      if isinstance(item, _Raised):
        raise item.error
      yield item
  finally:
    # The consumer stopped early or finished: let the worker go, and wait for it to leave
    # TensorFlow and XLA, or the interpreter may exit under its feet and abort.
    stop.set()
    worker.join(timeout=60)
