"""Tests of the input pipeline: sources, bad files, splits, padding, resuming, hosts, loaders,
sharding."""

import io
import itertools
import math
import os
from pathlib import Path
import re
import subprocess
import sys
import textwrap
import threading

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from ce_jax import configs, input_pipeline, sharding

REPO = Path(__file__).resolve().parent.parent

# Good files of every mode the pipeline must turn into RGB, each a solid colour that identifies it.
GOOD = {
    'rgb.jpg': ('RGB', (200, 30, 30), (200, 30, 30)),
    'grey.png': ('L', 90, (90, 90, 90)),
    'rgba.png': ('RGBA', (30, 200, 30, 255), (30, 200, 30)),
    'palette.png': ('P', (30, 30, 200), (30, 30, 200)),
    'deep16.png': ('I;16', 40000, (155, 155, 155)),  # 16-bit grey, scaled to 8 bits
    'cmyk.jpg': ('CMYK', (0, 0, 255, 0), (255, 255, 0)),
    'small10.jpg': ('RGB', (120, 60, 0), (120, 60, 0)),  # smaller than the crop: upscaled
    'photo.webp': ('RGB', (60, 0, 120), (60, 0, 120)),
    'image.bmp': ('RGB', (180, 180, 60), (180, 180, 60)),
    'sub/dir/UPPER.JPEG': ('RGB', (10, 10, 10), (10, 10, 10)),  # recursive, any-case extension
    'large.jpg': ('RGB', (0, 120, 120), (0, 120, 120)),  # 3000x2000, reduced while decoding
}
BAD = ('empty.jpg', 'truncated.jpg', 'notes.jpg', 'garbage.png')


def tiny(**overrides):
  config = configs.get('tiny')
  with config.unlocked():
    for k, v in overrides.items():
      config[k] = v
  return config


def write_image(path: Path, mode: str, value, size=(48, 40)) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  if mode == 'P':
    img = Image.new('RGB', size, value).convert('P', palette=Image.ADAPTIVE)
  elif mode == 'I;16':
    img = Image.fromarray(np.full(size[::-1], value, np.uint16))
  else:
    img = Image.new(mode, size, value)
  img.save(path)


def make_good_and_bad(root: Path) -> None:
  for name, (mode, value, _) in GOOD.items():
    size = {'small10.jpg': (10, 10), 'large.jpg': (3000, 2000)}.get(name, (48, 40))
    write_image(root / name, mode, value, size)
  (root / 'empty.jpg').write_bytes(b'')
  noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(noise).save(buf, 'JPEG')
  (root / 'truncated.jpg').write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  (root / 'notes.jpg').write_text('not an image, just text with a .jpg name\n')
  (root / 'garbage.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4)
  (root / 'README.txt').write_text('not an image extension: ignored, not counted\n')


def make_numbered(root: Path, ids) -> None:
  """Tiny PNGs whose red channel is 4 * id, so that output images say which file they came from."""
  for i in ids:
    write_image(root / f'img{i:03d}.png', 'RGB', (4 * i, 100, 50), (8, 8))


def read_all(config, split='test', loader=None):
  """Every batch of a one-pass split, as numpy, and the SkipCounter."""
  ds, skipped = input_pipeline.create_dataset(
      config, split, shuffle=False, repeat=False, loader=loader
  )
  return list(ds), skipped


def first_batches(config, n, split='train', **kwargs):
  """The first `n` batches of a split's stream, as numpy."""
  ds, _ = input_pipeline.create_dataset(config, split, **kwargs)
  return list(itertools.islice(ds, n))


def assert_same_batches(a, b):
  assert len(a) == len(b) > 0
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['valid'], y['valid'])


def valid_images(batches) -> np.ndarray:
  return np.concatenate([b['image'][b['valid'] > 0] for b in batches])


def ids_in(batches) -> set[int]:
  reds = (valid_images(batches)[..., 0].mean(axis=(1, 2)) + 1) * 127.5
  return {int(round(r / 4)) for r in reds}


def test_places365_mock_shapes_range_and_holes():
  config = tiny(dataset='places365_small')
  with config.mask.unlocked():
    config.mask.kind = 'block'  # random boxes: a stronger check of crop / fill than the centre
  with tfds.testing.mock_data(num_examples=20):
    train, skipped = input_pipeline.create_dataset(config, 'train')
    test, _ = input_pipeline.create_dataset(config, 'test')
    batch = next(iter(train))
    test_batches = list(test)
    mesh = sharding.data_mesh()
    device_batch = next(input_pipeline.device_batches(train, config, mesh, jax.random.key(0)))

  assert batch['image'].shape == (16, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['valid'].shape == (16,) and batch['valid'].dtype == np.float32
  assert np.all(batch['valid'] == 1)
  assert -1 <= batch['image'].min() < batch['image'].max() <= 1
  assert skipped.count == 0
  assert sum(b['valid'].sum() for b in test_batches) == 20

  b = jax.tree.map(np.asarray, device_batch)
  h = config.hole_size
  assert b['image'].shape == (16, 32, 32, 3) and b['masked'].shape == (16, 32, 32, 3)
  assert b['mask'].shape == (16, 32, 32, 1) and b['box'].shape == (16, 2)
  assert b['target'].shape == (16, h, h, 3) and b['patch_mask'].shape == (16, h, h, 1)
  assert b['valid'].shape == (16,)
  hole = np.broadcast_to(b['mask'] > 0, b['image'].shape)
  fill = np.broadcast_to(np.asarray(config.fill, np.float32), b['image'].shape)
  assert hole.any() and not hole.all()
  np.testing.assert_array_equal(b['masked'][hole], fill[hole])
  np.testing.assert_array_equal(b['masked'][~hole], b['image'][~hole])
  for img, (y, x), target in zip(b['image'], b['box'], b['target'], strict=True):
    np.testing.assert_array_equal(target, img[y : y + h, x : x + h])


def test_places365_not_prepared_says_how(tmp_path):
  config = tiny(dataset='places365_small', data_dir=str(tmp_path))
  with pytest.raises(ValueError, match='download_and_prepare') as e:
    input_pipeline.create_dataset(config, 'test')
  assert str(tmp_path) in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('loader', input_pipeline.LOADERS)
def test_folder_yields_every_good_image_and_counts_bad_ones(tmp_path, loader):
  make_good_and_bad(tmp_path)
  config = tiny(dataset=f'folder:{tmp_path}', folder_test_fraction=1.0)  # everything in 'test'
  batches, skipped = read_all(config, loader=loader)

  images = valid_images(batches)
  assert len(images) == len(GOOD)
  assert images.shape[1:] == (32, 32, 3) and np.all(np.abs(images) <= 1)
  colours = (images.mean(axis=(1, 2)) + 1) * 127.5
  for name, (_, _, expected) in GOOD.items():
    assert np.abs(colours - expected).max(axis=1).min() < 8, f'{name} missing or wrong colour'
  assert skipped.count == len(BAD), skipped.report()
  assert skipped.report().startswith(f'skipped {len(BAD)} unreadable images (e.g. ')
  assert {Path(p).name for p, _ in skipped.examples} <= set(BAD)


def test_folder_train_split_decodes_and_crops(tmp_path):
  make_good_and_bad(tmp_path)
  config = tiny(dataset=f'folder:{tmp_path}', folder_test_fraction=0.0, batch_size=4)
  ds, skipped = input_pipeline.create_dataset(config, 'train', seed=1)
  batches = list(itertools.islice(ds, 6))  # several epochs of 11 good images
  assert all(b['image'].shape == (4, 32, 32, 3) for b in batches)
  assert skipped.count == len(BAD)  # each bad file counted once, not once per epoch


def test_empty_folder_raises_naming_it(tmp_path):
  (tmp_path / 'notes.txt').write_text('no images here')
  config = tiny(dataset=f'folder:{tmp_path}')
  with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
    input_pipeline.create_dataset(config, 'train')


def test_folder_of_bad_files_raises_naming_it(tmp_path):
  make_good_and_bad(tmp_path)
  for name in GOOD:
    (tmp_path / name).unlink()
  config = tiny(dataset=f'folder:{tmp_path}', folder_test_fraction=1.0)
  with pytest.raises(ValueError, match=re.escape(str(tmp_path))) as e:
    input_pipeline.create_dataset(config, 'test')
  assert 'unreadable' in str(e.value) and '\n' not in str(e.value)


def test_missing_folder_and_unknown_dataset_raise():
  with pytest.raises(ValueError, match='does not exist'):
    input_pipeline.create_dataset(tiny(dataset='folder:/no/such/dir'), 'train')
  for name in ('imagenet', 'folder:', 'Samples'):
    with pytest.raises(ValueError, match=r"Unknown dataset .*'samples', 'folder:PATH'"):
      input_pipeline.create_dataset(tiny(dataset=name), 'train')
  with pytest.raises(ValueError, match='split'):
    input_pipeline.create_dataset(tiny(), 'validation')


def test_same_seed_same_batches():
  config = tiny()  # the bundled samples
  assert_same_batches(read_all(config)[0], read_all(config)[0])

  def first_train_batches(seed):
    return [b['image'] for b in first_batches(config, 3, seed=seed)]

  np.testing.assert_array_equal(first_train_batches(3), first_train_batches(3))
  assert not np.array_equal(first_train_batches(3), first_train_batches(4))


def test_folder_split_is_stable_when_files_are_added(tmp_path):
  config = tiny(dataset=f'folder:{tmp_path}', folder_test_fraction=0.5, batch_size=1)
  make_numbered(tmp_path, range(0, 24))
  test_before = ids_in(read_all(config, 'test')[0])
  train_before = ids_in(read_all(config, 'train')[0])
  assert test_before and train_before and test_before | train_before == set(range(24))
  make_numbered(tmp_path, range(24, 48))
  test_after = ids_in(read_all(config, 'test')[0])
  assert test_after & set(range(24)) == test_before  # no old file moved in or out
  assert test_after - test_before  # and some new ones arrived


def test_example_limits_take_a_fixed_subset(tmp_path):
  make_numbered(tmp_path, range(20))
  config = tiny(dataset=f'folder:{tmp_path}', folder_test_fraction=1.0, test_examples=7)
  first = ids_in(read_all(config)[0])
  assert len(first) == 7 and first == ids_in(read_all(config)[0])


@pytest.mark.parametrize('n,batch', [(21, 8), (16, 8), (3, 16)])
def test_last_test_batch_is_padded(tmp_path, n, batch):
  make_numbered(tmp_path, range(n))
  config = tiny(dataset=f'folder:{tmp_path}', folder_test_fraction=1.0, eval_batch_size=batch)
  batches, _ = read_all(config)
  assert len(batches) == math.ceil(n / batch)
  assert all(b['image'].shape[0] == batch for b in batches)
  assert sum(b['valid'].sum() for b in batches) == n
  assert ids_in(batches) == set(range(n))  # every image exactly once


def test_device_batches_shard_over_four_devices():
  code = textwrap.dedent("""
      import jax
      from ce_jax import configs, input_pipeline, sharding
      assert jax.device_count() == 4, jax.devices()
      config = configs.get('tiny')
      mesh = sharding.data_mesh()
      for split in ('train', 'test'):
        ds, _ = input_pipeline.create_dataset(config, split)
        batch = next(input_pipeline.device_batches(ds, config, mesh, jax.random.key(0)))
        for name, arr in batch.items():
          shards = arr.addressable_shards
          assert len(shards) == 4 and len({s.device for s in shards}) == 4, name
          assert all(s.data.shape[0] == arr.shape[0] // 4 for s in shards), name
      config.batch_size = 6
      ds, _ = input_pipeline.create_dataset(config, 'train')
      try:
        input_pipeline.device_batches(ds, config, mesh, jax.random.key(0))
      except ValueError as e:
        print('ERROR:', e)
  """)
  env = dict(
      os.environ,
      XLA_FLAGS='--xla_force_host_platform_device_count=4',
      JAX_PLATFORMS='cpu',
      TF_CPP_MIN_LOG_LEVEL='2',
  )
  result = subprocess.run(
      [sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr[-3000:]
  errors = [line for line in result.stdout.splitlines() if line.startswith('ERROR:')]
  assert errors == [
      'ERROR: batch_size=6 does not divide by the 4 devices; '
      'use a multiple of 4 (e.g. --batch_size=4).'
  ]


def test_prefetch_keeps_order_reraises_and_stops_with_its_consumer():
  assert list(input_pipeline._prefetch(iter(range(10)), 2)) == list(range(10))

  def failing():
    yield 1
    raise RuntimeError('boom')

  it = input_pipeline._prefetch(failing(), 2)
  assert next(it) == 1
  with pytest.raises(RuntimeError, match='boom'):
    next(it)

  endless = input_pipeline._prefetch(itertools.count(), 2)
  assert [next(endless) for _ in range(3)] == [0, 1, 2]
  endless.close()  # what a `for` loop that breaks, or garbage collection, does
  workers = [t for t in threading.enumerate() if t.name == 'device_batches']
  for t in workers:
    t.join(timeout=5)
  assert not any(t.is_alive() for t in workers)


# ------------------------------------------------------------------------------------------------
# Index-based order: resuming, several hosts, both loaders, unreadable files.


def fake_hosts(monkeypatch, index, count):
  """This process plays host `index` of `count` (datasets read the host when created)."""
  monkeypatch.setattr(jax, 'process_index', lambda: index)
  monkeypatch.setattr(jax, 'process_count', lambda: count)


@pytest.mark.parametrize('loader', input_pipeline.LOADERS)
def test_resumed_stream_sees_the_batches_and_masks_of_an_uninterrupted_one(loader):
  config = tiny(batch_size=8, train_crop_min=0.5)  # 40 samples: batches 3..6 cross an epoch
  uninterrupted = first_batches(config, 7, seed=5, loader=loader)
  resumed = first_batches(config, 4, seed=5, start_step=3, loader=loader)
  assert_same_batches(uninterrupted[3:], resumed)

  mesh, key = sharding.data_mesh(), jax.random.key(7)
  ds, _ = input_pipeline.create_dataset(config, 'train', seed=5, loader=loader)
  whole = input_pipeline.device_batches(ds, config, mesh, key)
  expected = [jax.tree.map(np.asarray, next(whole)) for _ in range(5)][3:]
  whole.close()
  ds, _ = input_pipeline.create_dataset(config, 'train', seed=5, start_step=3, loader=loader)
  tail = input_pipeline.device_batches(ds, config, mesh, key, first_index=3)
  got = [jax.tree.map(np.asarray, next(tail)) for _ in range(2)]
  tail.close()
  for a, b in zip(expected, got, strict=True):
    for name in a:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_resumed_places365_stream_skips_the_batches_it_saw():
  config = tiny(dataset='places365_small', batch_size=4)
  with tfds.testing.mock_data(num_examples=10):  # 6 batches: two reshuffled epochs and a bit
    uninterrupted = first_batches(config, 6, seed=3)
    resumed = first_batches(config, 3, seed=3, start_step=3)
  assert_same_batches(uninterrupted[3:], resumed)


@pytest.mark.parametrize('split', ['train', 'test'])
def test_two_hosts_together_read_the_batches_of_one(tmp_path, monkeypatch, split):
  make_numbered(tmp_path, range(13))
  (tmp_path / 'img004_bad.png').write_bytes(b'not a png')  # between img004 and img005
  config = tiny(
      dataset=f'folder:{tmp_path}',
      folder_test_fraction=float(split == 'test'),
      batch_size=4,
      eval_batch_size=4,
  )
  n = 5 if split == 'train' else None  # test: the whole split, once
  one, _ = read_all(config) if split == 'test' else (first_batches(config, n, seed=2), None)
  hosts = []
  for index in range(2):
    fake_hosts(monkeypatch, index, 2)
    hosts.append(read_all(config)[0] if split == 'test' else first_batches(config, n, seed=2))
  assert len(hosts[0]) == len(hosts[1]) == len(one)  # the same number of batches on every host
  together = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*hosts)]
  assert_same_batches(one, together)
  if split == 'test':  # 14 files (one unreadable) in 4 batches of 4: padding rows say valid = 0
    assert [list(b['valid']) for b in one] == [
        [1, 1, 1, 1],
        [1, 0, 1, 1],
        [1, 1, 1, 1],
        [1, 1, 0, 0],
    ]
    assert hosts[1][-1]['valid'].sum() == 0 and not hosts[1][-1]['image'].any()


@pytest.mark.parametrize('augment,crop_min', [(True, 0.0), (True, 0.6), (False, 0.0)])
def test_tf_and_threaded_loaders_give_identical_batches(augment, crop_min):
  config = tiny(batch_size=6, train_crop_min=crop_min)
  batches = {
      loader: first_batches(config, 3, seed=1, augment=augment, loader=loader)
      for loader in input_pipeline.LOADERS
  }
  assert_same_batches(*batches.values())
  tests = {loader: read_all(config, loader=loader)[0] for loader in input_pipeline.LOADERS}
  assert_same_batches(*tests.values())


def test_unreadable_train_file_gives_way_to_the_next_one(tmp_path):
  make_numbered(tmp_path, range(6))
  (tmp_path / 'img001_bad.png').write_bytes(b'')  # file position 2 of 7, in name order
  (tmp_path / 'img004_bad.jpg').write_text('not a jpeg')  # position 6
  config = tiny(dataset=f'folder:{tmp_path}', folder_test_fraction=0.0, batch_size=1)
  for loader in input_pipeline.LOADERS:
    ds, skipped = input_pipeline.create_dataset(
        config, 'train', shuffle=False, augment=False, loader=loader
    )
    ids = [ids_in([b]).pop() for b in itertools.islice(ds, 16)]  # two epochs of 8 positions
    assert ids == [0, 1, 2, 2, 3, 4, 5, 5] * 2, loader  # positions 2 and 6 show their successor
    assert skipped.count == 2 and skipped.report().startswith('skipped 2 unreadable images')
  shuffled = first_batches(config, 16, seed=3)
  assert_same_batches(shuffled, first_batches(config, 16, seed=3))  # the same substitutes
  assert np.all([b['valid'] for b in shuffled])


def test_create_dataset_refuses_unknown_loaders_and_start_steps():
  with pytest.raises(ValueError, match='loader'):
    input_pipeline.create_dataset(tiny(), 'train', loader='grain')
  with pytest.raises(ValueError, match='start_step'):
    input_pipeline.create_dataset(tiny(), 'train', start_step=-1)


def test_split_groups_keep_sequences_and_listed_groups_on_one_side(tmp_path):
  groups = {'photos/a1.jpg': 'burst', 'photos/a2.jpg': 'burst'}
  assert input_pipeline.split_group('photos/a1.jpg', groups) == 'group:burst'
  assert input_pipeline.split_group('cam/drive3_006690.jpg', {}) == 'sequence:cam/drive3'
  assert input_pipeline.split_group('cam/drive3_f00930.jpg', {}) == 'sequence:cam/drive3'
  assert input_pipeline.split_group('bsds-100007.jpg', {}) == 'bsds-100007.jpg'  # one photo
  # 12 sequences of 4 frames and a listed burst of 6: whole groups on each side.
  for s in range(12):
    for f in range(4):
      write_image(
          tmp_path / f'seq{s}_{100 + 30 * f:06d}.png', 'RGB', (4 * (4 * s + f), 9, 9), (8, 8)
      )
  for i in range(6):
    write_image(tmp_path / f'burst{i}.png', 'RGB', (4 * (48 + i), 9, 9), (8, 8))
  (tmp_path / input_pipeline.GROUPS_FILE).write_text(
      'file\tgroup\n' + ''.join(f'burst{i}.png\tb\n' for i in range(6))
  )
  config = tiny(dataset=f'folder:{tmp_path}', folder_test_fraction=0.5, batch_size=1)
  test = ids_in(read_all(config, 'test')[0])
  train = ids_in(read_all(config, 'train')[0])
  assert test and train and not test & train
  for group in [set(range(4 * s, 4 * s + 4)) for s in range(12)] + [set(range(48, 54))]:
    assert group <= test or group <= train, group
