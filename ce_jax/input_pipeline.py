"""Images from a source to device batches.

`create_dataset` gives this host's batches of a split (`HostBatches`); `device_batches` turns them
into global `jax.Array`s sharded over the mesh's `data` axis and masks them on the device with
`masks.make_batch`, a few batches ahead of the training step.

Sources (`config.dataset`):

* ``samples``          the photos bundled in ce_jax/samples (no download).
* ``folder:PATH``      every jpg/jpeg/png/webp/bmp under PATH, recursively; unreadable files are
                       skipped and counted (`SkipCounter`), never fatal.
* ``places365_small``  Places365 (256x256) through TFDS, from `config.data_dir`; never downloaded
                       here. Needs TensorFlow and tensorflow-datasets.

A folder (or the samples) is read by index, like grain: every host lists the whole split, and
the example at global position p is a pure function of (seed, p). Train position p = k * B + j is
row j of global batch k (B = batch_size); it shows file `order_e[p % n]` of epoch e = p // n,
where order_e is a permutation drawn from (seed, e), and its crop and flip are drawn from
(seed, p). Host h of H takes rows [h * B / H, (h + 1) * B / H) of every global batch. So a run
resumed at step k (`start_step=k`) sees exactly the batches k, k+1, ... of an uninterrupted one,
and H hosts together see exactly the batches of one. An unreadable file is counted and replaced
by the file of the next position (p + 1, p + 2, ...), the same on every host.

Test batches come in a fixed (sorted) order, once, centre-cropped. Global batch k holds positions
k * Be .. (k + 1) * Be - 1 (Be = eval_batch_size); positions past the split's end and unreadable
files are padding rows with `valid` = 0, so that an evaluation counts every image exactly once and
every host yields the same number of batches.

Two loaders run the same per-example function, so they give bit-identical batches: tf.data
(`loader='tf'`, the default where TensorFlow is installed) and a thread pool (`loader='threads'`,
the default without TensorFlow: Pillow releases the GIL while it decodes and resizes).

Places365 keeps TFDS and tf.data: each host reads its share (`tfds.split_for_jax_process`),
shuffled with fixed seeds, so a resumed run skips the records of the steps it did and sees the
same data; H hosts do not see the batches of one. Their test streams are padded to the same
number of batches (from the split's size in the TFDS metadata).
"""

from collections.abc import Callable, Iterator
import collections
import concurrent.futures
import csv
import dataclasses
import functools
import hashlib
import io
import itertools
import math
import os
from pathlib import Path
import queue
import re
import threading

from absl import logging
import jax
import ml_collections
import numpy as np

from ce_jax import augment as augment_lib
from ce_jax import images, masks, sharding

SAMPLES_DIR = Path(__file__).resolve().parent / 'samples'
TFDS_NAME = 'places365_small'
TFDS_SPLITS = {'train': 'train', 'test': 'validation'}
DATASET_FORMS = "'samples', 'folder:PATH' or 'places365_small'"
TFDS_NEEDS_TF = (
    'places365_small needs TensorFlow and tensorflow-datasets: ' "pip install 'ce_jax[tf]'"
)
LOADERS = ('tf', 'threads')
# Loader threads (tf.data's private pool, or the thread pool): all cores of a small machine, but
# never so many on a big host that they crowd out JAX's own threads.
HOST_THREADS = max(2, min(os.cpu_count() or 2, 16))
# Batches the thread pool works on ahead of the consumer.
BATCHES_IN_FLIGHT = 3
# Rows tf.data's loader computes per call into Python (at most: a divisor of the host batch).
TF_ROWS_PER_CALL = 8
# Separate random streams of one seed: the file order of an epoch, the crop of a position.
_ORDER_STREAM, _CROP_STREAM = 0, 1


class SkipCounter:
  """Files the pipeline could not decode, each counted once however many epochs see it.

  Decoding runs on loader threads, so updates take a lock. The caller reads `count` and logs
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


@dataclasses.dataclass(frozen=True)
class HostBatches:
  """This host's batches of a split: {'image': (b, S, S, 3) float32 in [-1, 1], 'valid': (b,)
  float32}. Each `iter()` starts again at the first batch, so the object can be read twice."""

  batch_size: int  # b: this host's rows of each global batch
  _iterate: Callable[[], Iterator[dict[str, np.ndarray]]] = dataclasses.field(repr=False)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return iter(self._iterate())


@functools.cache
def _tensorflow():
  """TensorFlow, imported on first use (only tf.data and TFDS need it); it must never reserve
  the accelerator's memory."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TensorFlow's devices were already initialised (by the caller).
    pass
  return tf


@functools.cache
def default_loader() -> str:
  """tf.data where TensorFlow imports, else the thread pool, said once per process."""
  try:
    _tensorflow()
    return 'tf'
  except ImportError:
    logging.warning('TensorFlow is not installed: reading images with the threaded loader.')
    return 'threads'


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
  """Stateless randomness: the same (seed, stream, index) draws the same numbers on any host,
  thread or resume point."""
  return np.random.default_rng([seed % 2**64, stream, index])


def _reason(e: Exception) -> str:
  """A short, path-free reason for the skip report."""
  text = str(e).splitlines()[0] if str(e) else type(e).__name__
  text = text.split(" '")[0] if text.startswith('cannot identify image file') else text
  return text[:120]


# ------------------------------------------------------------------------------------------------
# Folders (and the bundled samples): the whole split on every host, read by position.


GROUPS_FILE = 'groups.tsv'
_FRAME_NUMBER = re.compile(r'_[a-z]?\d{3,}$')


def read_groups(root: Path) -> dict[str, str]:
  """`root/groups.tsv` (a header, then `file<TAB>group` rows, paths relative to root), or {}."""
  path = root / GROUPS_FILE
  if not path.is_file():
    return {}
  with open(path, newline='') as f:
    return {r['file']: r['group'] for r in csv.DictReader(f, delimiter='\t')}


def split_group(rel_path: str, groups: dict[str, str]) -> str:
  """What decides a file's side of the split: its group in `groups.tsv`; else, for a frame of
  a sequence (`drive_006690.jpg`, `drive_f00930.jpg`), the sequence (`drive`), so near-duplicate frames stay
  together; else the file itself."""
  if rel_path in groups:
    return 'group:' + groups[rel_path]
  stem, dot, ext = rel_path.rpartition('.')
  sequence = _FRAME_NUMBER.sub('', stem) if dot else rel_path
  return rel_path if sequence == stem else 'sequence:' + sequence


def _in_test_split(group: str, test_fraction: float) -> bool:
  """By a hash of the file's group (`split_group`): adding files never moves existing ones
  between train and test, and near-duplicates fall on one side."""
  digest = hashlib.md5(group.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2**64 < test_fraction


def _example_limit(config, split: str) -> int:
  return config.train_examples if split == 'train' else config.test_examples


def _split_paths(root: Path, config, split: str) -> list[str]:
  """The files of `split` under `root` (hash split, then example limit), the same on every host."""
  root = root.expanduser()
  if not root.is_dir():
    raise ValueError(f'Image folder {root} does not exist or is not a folder.')
  files = images.list_images(root)
  if not files:
    extensions = '/'.join(e[1:] for e in images.IMAGE_EXTENSIONS)
    raise ValueError(f'No images ({extensions}) under {root}.')
  frac = config.folder_test_fraction
  groups = read_groups(root)
  paths = [
      str(p)
      for p in files
      if _in_test_split(split_group(p.relative_to(root).as_posix(), groups), frac)
      == (split == 'test')
  ]
  if (limit := _example_limit(config, split)) >= 0:
    paths = paths[:limit]
  if not paths:
    raise ValueError(
        f'None of the {len(files)} images under {root} is in the {split!r} split '
        f'(folder_test_fraction={frac}).'
    )
  return paths


def split_files(config, split: str) -> list[str]:
  """The image files of a folder dataset's (or the bundled samples') split, as training and
  evaluation read them."""
  root = _folder_root(config)
  if root is None:
    raise ValueError(f'dataset={config.dataset!r} is not a folder of images.')
  return _split_paths(root, config, split)


def _folder_root(config) -> Path | None:
  if config.dataset == 'samples':
    return SAMPLES_DIR
  if config.dataset.startswith('folder:') and config.dataset[len('folder:') :]:
    return Path(config.dataset[len('folder:') :])
  return None


def num_examples(config, split: str) -> int:
  """Images in `split` over all hosts (before unreadable files are skipped): sizes an epoch."""
  if (root := _folder_root(config)) is not None:
    return len(_split_paths(root, config, split))
  if config.dataset == TFDS_NAME:
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ValueError(TFDS_NEEDS_TF) from None

    data_dir = os.path.expanduser(config.data_dir) if config.data_dir else None
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    n = builder.info.splits[TFDS_SPLITS[split]].num_examples
    limit = _example_limit(config, split)
    return min(n, limit) if limit >= 0 else n
  raise ValueError(f'Unknown dataset {config.dataset!r}; use {DATASET_FORMS}.')


class _FolderExamples:
  """The examples of a folder split by global position: `example(p)` is a pure function of
  (files, seed, p), whichever host or thread asks, and whenever."""

  def __init__(
      self,
      paths: list[str],
      counter: SkipCounter,
      *,
      size: int,
      seed: int,
      shuffle: bool,
      repeat: bool,
      augment: bool,
      min_fraction: float,
  ):
    self._paths, self._counter = paths, counter
    self._size, self._seed, self._min_fraction = size, seed, min_fraction
    self._shuffle, self._repeat, self._augment = shuffle, repeat, augment
    self._min_side = images.decode_side(size, min_fraction)
    self._unreadable: set[int] = set()  # file indices: each is decoded (and fails) once
    self._padding = np.zeros((size, size, 3), np.float32)
    self._order = functools.lru_cache(maxsize=4)(self._epoch_order)  # this epoch and the next

  def _epoch_order(self, epoch: int) -> np.ndarray:
    return _rng(self._seed, _ORDER_STREAM, epoch).permutation(len(self._paths))

  def _file(self, position: int) -> int:
    epoch, i = divmod(position, len(self._paths))
    return int(self._order(epoch)[i]) if self._shuffle else i

  def _load(self, index: int) -> np.ndarray | None:
    """The pixels of file `index`, or None (counted) when it cannot be read."""
    if index in self._unreadable:
      return None
    path = self._paths[index]
    try:
      return images.load_image(path, self._min_side)
    except Exception as e:  # pylint: disable=broad-except  # Any bad file is skipped, never fatal.
      self._unreadable.add(index)
      self._counter.add(path, _reason(e))
      return None

  def check_readable(self, what: str) -> None:
    """Fails now, naming the folder, rather than yield nothing: decodes until one file works."""
    if all(self._load(i) is None for i in range(len(self._paths))):
      raise ValueError(f'No readable image in {what}: {self._counter.report()}.')

  def example(self, position: int) -> tuple[np.ndarray, float]:
    """(float32 (S, S, 3) image, valid) at global `position`."""
    if self._repeat:  # an unreadable file gives way to the next position's, on every host alike
      for q in itertools.count(position):
        if (pixels := self._load(self._file(q))) is not None:
          break
        if len(self._unreadable) == len(self._paths):  # files that went bad while training
          raise ValueError(f'No readable image left: {self._counter.report()}.')
    else:
      pixels = self._load(self._file(position)) if position < len(self._paths) else None
      if pixels is None:
        return self._padding, 0.0
    rng = _rng(self._seed, _CROP_STREAM, position) if self._augment else None
    return images.crop(pixels, self._size, rng, self._min_fraction), 1.0


def _host_rows(example: Callable[[int], tuple], host_batch: int) -> Callable[[int], tuple]:
  """example(global position) -> example(row of this host's stream): host h reads rows
  [h * b, (h + 1) * b) of every global batch."""
  hosts, host = jax.process_count(), jax.process_index()

  def row_example(row: int) -> tuple[np.ndarray, float]:
    batch, j = divmod(row, host_batch)
    return example((batch * hosts + host) * host_batch + j)

  return row_example


# ------------------------------------------------------------------------------------------------
# Loaders: the same rows, through tf.data or a thread pool.


def _options():
  tf = _tensorflow()
  options = tf.data.Options()
  options.deterministic = True  # the same seed gives the same batches; evaluation order is fixed
  options.threading.private_threadpool_size = HOST_THREADS
  options.threading.max_intra_op_parallelism = 1
  return options


def _tf_batches(
    row_example: Callable[[int], tuple],
    batch: int,
    size: int,
    first_batch: int,
    num_batches: int | None,
) -> Iterator[dict[str, np.ndarray]]:
  """Batches of rows first_batch * batch, ... computed by tf.data's threads, a few rows per call
  into Python (each call costs about 0.1 ms of TensorFlow's time)."""
  tf = _tensorflow()
  rows = math.gcd(batch, TF_ROWS_PER_CALL)

  def load(chunk):
    image, valid = np.empty((rows, size, size, 3), np.float32), np.empty((rows,), np.float32)
    for j in range(rows):
      image[j], valid[j] = row_example(int(chunk) * rows + j)
    return image, valid

  def load_tf(chunk):
    image, valid = tf.numpy_function(load, [chunk], (tf.float32, tf.float32), stateful=False)
    return tf.ensure_shape(image, (rows, size, size, 3)), tf.ensure_shape(valid, (rows,))

  def merge(image, valid):  # (batch // rows, rows, ...) -> (batch, ...)
    return {'image': tf.reshape(image, (batch, size, size, 3)), 'valid': tf.reshape(valid, [batch])}

  first = first_batch * batch // rows
  stop = first + num_batches * batch // rows if num_batches is not None else np.iinfo(np.int64).max
  ds = tf.data.Dataset.range(first, stop).map(load_tf, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch // rows).map(merge).prefetch(tf.data.AUTOTUNE).with_options(_options())
  return _numpy_batches(ds)


def _numpy_batches(ds) -> Iterator[dict[str, np.ndarray]]:
  """A tf.data dataset's batches as numpy; closing the generator stops tf.data's threads now, as
  the thread pool's stop (a live tf.data iterator can hang the interpreter's exit)."""
  iterator = ds.as_numpy_iterator()
  try:
    yield from iterator
  finally:
    del iterator


def _threaded_batches(
    row_example: Callable[[int], tuple],
    batch: int,
    size: int,
    first_batch: int,
    num_batches: int | None,
) -> Iterator[dict[str, np.ndarray]]:
  """The same batches as `_tf_batches`, from a thread pool that keeps a few batches in flight."""
  pool = concurrent.futures.ThreadPoolExecutor(HOST_THREADS, thread_name_prefix='ce_jax_loader')

  def submit(k: int):
    out = {
        'image': np.empty((batch, size, size, 3), np.float32),
        'valid': np.empty((batch,), np.float32),
    }

    def fill(j: int) -> None:
      out['image'][j], out['valid'][j] = row_example(k * batch + j)

    return out, [pool.submit(fill, j) for j in range(batch)]

  indices = (
      itertools.count(first_batch)
      if num_batches is None
      else iter(range(first_batch, first_batch + num_batches))
  )
  in_flight = collections.deque(submit(k) for k in itertools.islice(indices, BATCHES_IN_FLIGHT))
  try:
    while in_flight:
      out, futures = in_flight.popleft()
      if (k := next(indices, None)) is not None:
        in_flight.append(submit(k))
      for future in futures:
        future.result()  # re-raises a worker's error here
      yield out
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


_LOADER_FUNCTIONS = {'tf': _tf_batches, 'threads': _threaded_batches}


# ------------------------------------------------------------------------------------------------
# Places365 through TFDS and tf.data.


def _tfds_batches(
    config,
    split: str,
    counter: SkipCounter,
    *,
    seed: int,
    start_step: int,
    shuffle: bool,
    repeat: bool,
    augment: bool,
    batch: int,
) -> HostBatches:
  """This host's TFDS share, decoded and cropped by `images` like a folder."""
  try:
    tf = _tensorflow()
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # heavy, only here
  except ImportError:
    raise ValueError(TFDS_NEEDS_TF) from None

  options = _options()
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
        read_config=tfds.ReadConfig(shuffle_seed=seed, options=options),
    )
  except AssertionError:  # TFDS's "could not find data in DIR"
    where = data_dir or tfds.core.constants.DATA_DIR
    raise ValueError(
        f'{TFDS_NAME} is not prepared in {where}; download it once with `python -c "import '
        f"tensorflow_datasets as tfds; tfds.builder('{TFDS_NAME}', data_dir='{where}')"
        f'.download_and_prepare()"` (about 30 GB) or pass --data_dir.'
    ) from None

  size, min_fraction = config.image_size, config.train_crop_min
  min_side = images.decode_side(size, min_fraction)

  def example(position, image_bytes):
    try:
      pixels = images.load_image(io.BytesIO(image_bytes), min_side)
    except Exception as e:  # pylint: disable=broad-except  # Any bad record is skipped.
      counter.add(f'{split} record {position}', _reason(e))
      return np.zeros((size, size, 3), np.float32), False
    rng = _rng(seed, _CROP_STREAM, int(position)) if augment else None
    return images.crop(pixels, size, rng, min_fraction), True

  def example_tf(position, image_bytes):
    image, ok = tf.numpy_function(
        example, [position, image_bytes], (tf.float32, tf.bool), stateful=False
    )
    return tf.ensure_shape(image, (size, size, 3)), tf.ensure_shape(ok, ())

  def pad(image_batch):  # a partial last batch: `valid` marks the real rows
    n = tf.shape(image_batch)[0]
    image_batch = tf.pad(image_batch, [[0, batch - n], [0, 0], [0, 0], [0, 0]])
    valid = tf.concat([tf.ones([n]), tf.zeros([batch - n])], 0)
    return {
        'image': tf.ensure_shape(image_batch, (batch, size, size, 3)),
        'valid': tf.ensure_shape(valid, (batch,)),
    }

  records = records.map(lambda ex: ex['image'])
  if shuffle:  # fixed seeds: every run draws the same orders, epoch after epoch
    records = records.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    records = records.repeat()
  # The element's position seeds its crop; a resumed run skips the records of the steps done.
  ds = records.enumerate().skip(start_step * batch)
  ds = ds.map(example_tf, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.filter(lambda image, ok: ok)
  ds = ds.map(lambda readable_image, ok: readable_image)
  if repeat:
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(lambda image_batch: {'image': image_batch, 'valid': tf.ones([batch])})
  else:
    ds = ds.batch(batch).map(pad)
  if not repeat and jax.process_count() > 1:
    # Every host yields ceil(ceil(n / hosts) / batch) batches whatever its own share (TFDS's
    # shares differ by up to one image), the last ones padding (valid = 0): no host waits in a
    # cross-host collective for a batch another host does not have.
    share = -(-num_examples(config, split) // jax.process_count())
    blank = {'image': tf.zeros((batch, size, size, 3)), 'valid': tf.zeros([batch])}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat()).take(-(-share // batch))
  ds = ds.prefetch(tf.data.AUTOTUNE).with_options(options)
  return HostBatches(batch, functools.partial(_numpy_batches, ds))


# ------------------------------------------------------------------------------------------------
# Settings and the entry point.


def validate(config) -> None:
  """One-line errors for data settings that would otherwise fail (or silently mislead) later."""
  for what in ('batch_size', 'eval_batch_size'):
    value = config[what]
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f'{what}={value!r} must be a positive integer.')
  if not 0.0 <= config.train_crop_min <= 1.0:
    raise ValueError(
        f'train_crop_min={config.train_crop_min} must be in [0, 1] (0 = rescale and '
        'crop; f > 0 = a random window of f..1 x the shorter side).'
    )
  if not 0.0 <= config.folder_test_fraction <= 1.0:
    raise ValueError(f'folder_test_fraction={config.folder_test_fraction} must be in [0, 1].')
  fill = config.fill
  if (
      not isinstance(fill, (tuple, list))
      or len(fill) != 3
      or not all(isinstance(v, (int, float)) and -1.0 <= v <= 1.0 for v in fill)
  ):
    raise ValueError(f'fill={fill!r} must be three numbers in [-1, 1] (an RGB colour).')
  if not (isinstance(config.seed, int) and 0 <= config.seed < 2**31):
    raise ValueError(f'seed={config.seed} must be an integer in [0, 2**31).')
  _validate_mask(config)
  memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  for what in ('batch_size', 'eval_batch_size'):
    need = config[what] * config.image_size**2 * 3 * 4  # float32 pixels
    if need > memory:
      raise ValueError(
          f'{what}={config[what]} needs {need / 2**30:.0f} GB for its {config.image_size} px '
          f'images alone, more than the {memory / 2**30:.0f} GB of memory here; lower it.'
      )


def _validate_mask(config) -> None:
  """Refuses mask settings that would give empty holes (a loss of 0 and a PSNR of 100)."""
  m = config.mask
  if m.kind not in masks.KINDS:
    raise ValueError(f'mask.kind={m.kind!r}: choose one of {", ".join(masks.KINDS)}.')
  if not (isinstance(m.overlap, int) and 0 <= 2 * m.overlap < config.hole_size):
    raise ValueError(
        f'mask.overlap={m.overlap} leaves no hole in a {config.hole_size} px patch; use '
        f'0 <= overlap < {(config.hole_size + 1) // 2}.'
    )
  if m.kind == 'freeform':
    if not (isinstance(m.max_strokes, int) and m.max_strokes >= 1):
      raise ValueError(f'mask.max_strokes={m.max_strokes} must be >= 1 (strokes per hole).')
    if not (isinstance(m.max_vertices, int) and m.max_vertices >= 2):
      raise ValueError(
          f'mask.max_vertices={m.max_vertices} must be >= 2 (a stroke joins its vertices).'
      )
    if not m.max_radius > 0:
      raise ValueError(f'mask.max_radius={m.max_radius} must be > 0 (a fraction of hole_size).')


def host_batch_size(config, split: str) -> int:
  """This host's share of the global (train or eval) batch."""
  what = 'batch_size' if split == 'train' else 'eval_batch_size'
  batch, hosts = config[what], jax.process_count()
  if batch % hosts:
    raise ValueError(f'{what}={batch} does not divide by the {hosts} hosts.')
  return batch // hosts


def create_dataset(
    config,
    split: str,
    *,
    seed: int = 0,
    start_step: int = 0,
    shuffle: bool | None = None,
    repeat: bool | None = None,
    augment: bool | None = None,
    loader: str | None = None,
) -> tuple[HostBatches, SkipCounter]:
  """This host's batches of `split` ('train' or 'test'), from global batch `start_step` on.

  shuffle, repeat and augment (random crop and flip) default to (split == 'train'); a stream that
  does not repeat pads its last batch (`valid` = 0), so that scoring the training split
  (shuffle=repeat=augment=False) sees every image once. `loader` is 'tf' (tf.data), 'threads'
  or None (tf.data where TensorFlow is installed). Returns the batches and the `SkipCounter` of
  the files they could not read.
  """
  if split not in TFDS_SPLITS:
    raise ValueError(f"split must be 'train' or 'test', not {split!r}.")
  if loader not in (None, *LOADERS):
    raise ValueError(f'loader={loader!r} must be one of {LOADERS} or None.')
  if not (isinstance(start_step, int) and start_step >= 0):
    raise ValueError(f'start_step={start_step!r} must be an integer >= 0.')
  train = split == 'train'
  shuffle = train if shuffle is None else shuffle
  repeat = train if repeat is None else repeat
  augment = train if augment is None else augment
  batch = host_batch_size(config, 'train' if repeat else 'test')
  counter = SkipCounter()

  if (root := _folder_root(config)) is None:
    if config.dataset == TFDS_NAME:
      if loader == 'threads':
        raise ValueError(f"{TFDS_NAME} is read by tf.data; loader='threads' reads folders.")
      return (
          _tfds_batches(
              config,
              split,
              counter,
              seed=seed,
              start_step=start_step,
              shuffle=shuffle,
              repeat=repeat,
              augment=augment,
              batch=batch,
          ),
          counter,
      )
    raise ValueError(f'Unknown dataset {config.dataset!r}; use {DATASET_FORMS}.')

  paths = _split_paths(root, config, split)
  examples = _FolderExamples(
      paths,
      counter,
      size=config.image_size,
      seed=seed,
      shuffle=shuffle,
      repeat=repeat,
      augment=augment,
      min_fraction=config.train_crop_min,
  )
  examples.check_readable(f'the {split!r} split of {root.expanduser()}')
  num_batches = None
  if not repeat:
    num_batches = max(0, math.ceil(len(paths) / (batch * jax.process_count())) - start_step)
  loader = loader or default_loader()
  if loader == 'tf':
    try:
      _tensorflow()
    except ImportError:
      raise ValueError(
          "loader='tf' needs TensorFlow: pip install 'ce_jax[tf]', or use loader='threads'."
      ) from None
  iterate = functools.partial(
      _LOADER_FUNCTIONS[loader],
      _host_rows(examples.example, batch),
      batch,
      config.image_size,
      start_step,
      num_batches,
  )
  return HostBatches(batch, iterate), counter


# ------------------------------------------------------------------------------------------------
# Device side.


def device_batches(
    host_batches: HostBatches,
    config,
    mesh: jax.sharding.Mesh,
    key: jax.Array,
    *,
    first_index: int = 0,
    prefetch: int = 2,
    augment: bool = False,
    transform: str | None = None,
) -> Iterator[dict[str, jax.Array]]:
  """Global batches sharded over the mesh's `data` axis, masked on the device.

  Yields `masks.make_batch`'s dict (image, masked, mask, box, target, patch_mask) plus `valid`,
  the i-th batch masked with `fold_in(key, first_index + i)`: a run resumed at step k passes
  first_index=k and draws the masks an uninterrupted run draws. A background thread keeps
  `prefetch` batches ready, so the device never waits for the host. augment=True (training)
  applies `augment.photometric` to a `config.photometric` share of the images first;
  transform='dark' (or another `augment.TRANSFORMS` name) changes every image, for the
  robustness sets.
  """
  global_batch = host_batches.batch_size * jax.process_count()
  what = 'batch_size' if global_batch == config.batch_size else 'eval_batch_size'
  sharding.check_divisible(global_batch, mesh, what)
  data_sharding = sharding.batch_sharding(mesh)
  key = jax.device_put(key, sharding.replicated(mesh))
  mask = _masker(ml_collections.FrozenConfigDict(config), mesh, augment, transform)

  def batches():
    for i, batch in enumerate(host_batches, first_index):
      yield mask(
          jax.make_array_from_process_local_data(data_sharding, batch['image']),
          jax.make_array_from_process_local_data(data_sharding, batch['valid']),
          key,
          i,
      )

  return _prefetch(batches(), prefetch)


@functools.lru_cache(maxsize=8)
def _masker(
    config: ml_collections.FrozenConfigDict, mesh, augment: bool = False, transform=None
) -> Callable:
  """The jitted masking step, compiled once per (config, mesh), not once per evaluation."""
  file_mask = (
      masks.load_mask_file(config.mask.file, config.image_size)
      if config.mask.kind == 'file'
      else None
  )

  @functools.partial(jax.jit, out_shardings=sharding.batch_sharding(mesh))
  def mask(image_batch, valid, key, i):
    key = jax.random.fold_in(key, i)
    if transform:
      image_batch = augment_lib.transform(image_batch, transform)
    if augment:
      image_batch = augment_lib.photometric(
          image_batch, jax.random.fold_in(key, 1), config.photometric
      )
    return {
        **masks.make_batch(image_batch, key, config, file_mask),
        'valid': valid,
    }

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
    finally:
      if hasattr(iterator, 'close'):
        iterator.close()  # the loader's threads stop now, not when garbage collected

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
