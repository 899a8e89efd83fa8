"""Tests of the masks: centre / block / freeform / file regions, boxes, batches, paste."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from ce_jax import masks
from conftest import tiny


def mask_cfg(kind='center', overlap=2, **kw):
  fields = {f'mask__{k}': v for k, v in kw.items()}
  return tiny(mask__kind=kind, mask__overlap=overlap, **fields).mask


def sample(kind, b=8, seed=0, size=32, hole=16, overlap=2, **kw):
  region, corner = masks.sample(jax.random.key(seed), b, mask_cfg(kind, overlap, **kw), size, hole)
  return np.asarray(region), np.asarray(corner)


def rand_images(b=3, size=32, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (b, size, size, 3)), jnp.float32)


def np_crop(x, corner, h):
  return np.stack(
      [xi[y : y + h, x_ : x_ + h] for xi, (y, x_) in zip(np.asarray(x), np.asarray(corner))]
  )


# -------------------------------------------------------------------------------- centre


@pytest.mark.parametrize('size,hole,overlap', [(32, 16, 2), (128, 64, 4), (256, 64, 0)])
def test_center_mask_is_exact_centre_box(size, hole, overlap):
  region, corner = sample('center', b=2, size=size, hole=hole, overlap=overlap)
  o = (size - hole) // 2
  assert masks.center_corner(size, hole) == (o, o)
  assert corner.dtype == np.int32 and corner.tolist() == [[o, o]] * 2
  expected = np.zeros((size, size), np.float32)
  expected[o + overlap : o + hole - overlap, o + overlap : o + hole - overlap] = 1
  assert region.shape == (2, size, size, 1) and region.dtype == np.float32
  for r in region:
    np.testing.assert_array_equal(r[..., 0], expected)


def test_center_mask_pixel_indices():
  region, _ = sample('center', b=1, size=32, hole=16, overlap=2)
  ys, xs = np.nonzero(region[0, ..., 0])
  assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 21, 10, 21)
  assert region.sum() == 12 * 12
  region, _ = sample('center', b=1, size=128, hole=64, overlap=4)
  ys, xs = np.nonzero(region[0, ..., 0])
  assert (ys.min(), ys.max(), xs.min(), xs.max()) == (36, 91, 36, 91)
  assert region.sum() == 56 * 56


def test_center_corner_odd_sizes():
  assert masks.center_corner(33, 16) == (8, 8)
  assert masks.center_corner(64, 64) == (0, 0)


def test_box_region():
  r = np.asarray(masks.box_region(8, 2))
  assert r.sum() == 16 and np.all(r[2:6, 2:6] == 1)
  assert np.all(np.asarray(masks.box_region(8, 0)) == 1)


# ------------------------------------------------------------------------- block / freeform


def check_inside_box(region, corner, size, hole, overlap):
  assert np.all((corner >= 0) & (corner <= size - hole))
  for r, (y, x) in zip(region[..., 0], corner):
    assert r.sum() > 0
    outside = r.copy()
    outside[y + overlap : y + hole - overlap, x + overlap : x + hole - overlap] = 0
    assert not outside.any(), 'region leaves the box shrunk by the overlap'
    assert set(np.unique(r)) <= {0.0, 1.0}


@pytest.mark.parametrize('kind', ['block', 'freeform'])
@pytest.mark.parametrize('size,hole,overlap', [(32, 16, 2), (64, 32, 4), (32, 32, 0)])
def test_random_masks_inside_box_and_reproducible(kind, size, hole, overlap):
  region, corner = sample(kind, b=16, size=size, hole=hole, overlap=overlap)
  check_inside_box(region, corner, size, hole, overlap)
  if kind == 'block':
    inner = (hole - 2 * overlap) ** 2
    np.testing.assert_array_equal(region.sum(axis=(1, 2, 3)), inner)
  else:
    assert np.all(region.sum(axis=(1, 2, 3)) < (hole - 2 * overlap) ** 2)  # not a full box
  region2, corner2 = sample(kind, b=16, size=size, hole=hole, overlap=overlap)
  np.testing.assert_array_equal(region, region2)
  np.testing.assert_array_equal(corner, corner2)
  region3, corner3 = sample(kind, b=16, seed=1, size=size, hole=hole, overlap=overlap)
  if kind == 'freeform' or size > hole:  # a block filling the whole image has one position
    assert not np.array_equal(region, region3)
  if size > hole:
    assert not np.array_equal(corner, corner3)
    assert len({tuple(b) for b in corner}) > 4  # positions vary across the batch


def test_freeform_shapes_vary_and_stay_overlap_from_edge():
  region, corner = sample('freeform', b=32, size=64, hole=32, overlap=4)
  patches = np_crop(region, corner, 32)[..., 0]
  assert len({p.tobytes() for p in patches}) == 32
  assert not patches[:, :4].any() and not patches[:, -4:].any()
  assert not patches[:, :, :4].any() and not patches[:, :, -4:].any()


def test_freeform_region_is_jittable_and_deterministic():
  f = jax.jit(masks.freeform_region, static_argnums=(1, 2, 3, 4, 5))
  a = np.asarray(f(jax.random.key(3), 16, 2, 4, 5, 0.12))
  b = np.asarray(masks.freeform_region(jax.random.key(3), 16, 2, 4, 5, 0.12))
  np.testing.assert_array_equal(a, b)
  assert a.shape == (16, 16) and a.sum() > 0


def test_freeform_stays_inside_overlap_for_wide_strokes():
  region, corner = sample('freeform', b=16, size=32, hole=16, overlap=4, max_radius=0.3)
  check_inside_box(region, corner, 32, 16, 4)


# ------------------------------------------------------------------------------ file masks


def write_png(path, array):
  Image.fromarray(array.astype(np.uint8)).save(path)
  return str(path)


def test_load_mask_file_same_size(tmp_path):
  a = np.zeros((32, 32), np.uint8)
  a[5:11, 20:27] = 255
  a[0, 0] = 100  # grey below the threshold: not a hole
  got = masks.load_mask_file(write_png(tmp_path / 'm.png', a), 32)
  assert got.dtype == np.float32 and got.shape == (32, 32)
  np.testing.assert_array_equal(got, (a > 127).astype(np.float32))


def test_load_mask_file_resizes_and_converts_rgb(tmp_path):
  a = np.zeros((64, 64, 3), np.uint8)
  a[20:30, 30:42] = 255
  got = masks.load_mask_file(write_png(tmp_path / 'm.png', a), 32)
  assert got.shape == (32, 32)
  ys, xs = np.nonzero(got)
  assert abs(ys.min() - 10) <= 1 and abs(ys.max() - 14) <= 1
  assert abs(xs.min() - 15) <= 1 and abs(xs.max() - 20) <= 1
  assert abs(got.sum() - 5 * 6) <= 12


def test_load_mask_file_errors(tmp_path):
  with pytest.raises(ValueError, match='no white'):
    masks.load_mask_file(write_png(tmp_path / 'black.png', np.zeros((16, 16))), 32)
  bad = tmp_path / 'notes.png'
  bad.write_text('not an image')
  with pytest.raises(ValueError, match='notes.png'):
    masks.load_mask_file(str(bad), 32)
  with pytest.raises(ValueError, match='missing.png'):
    masks.load_mask_file(str(tmp_path / 'missing.png'), 32)


def test_box_around_centres_the_box():
  region = np.zeros((32, 32), np.float32)
  region[10:15, 15:21] = 1  # rows 10..14, cols 15..20
  y, x = masks.box_around(region, 16)
  assert (y, x) == (4, 10)
  # margins above / below and left / right differ by at most one pixel
  assert abs((10 - y) - (y + 16 - 15)) <= 1 and abs((15 - x) - (x + 16 - 21)) <= 1


def test_box_around_clips_to_image():
  region = np.zeros((32, 32), np.float32)
  region[0:3, 29:32] = 1
  assert masks.box_around(region, 16) == (0, 16)


def test_box_around_region_too_large():
  region = np.zeros((32, 32), np.float32)
  region[4:22, 8:12] = 1  # 18 px tall
  with pytest.raises(ValueError) as e:
    masks.box_around(region, 16)
  msg = str(e.value)
  assert '18x4' in msg and '16x16' in msg and '\n' not in msg
  region = np.zeros((32, 32), np.float32)
  region[4:20, 8:20] = 1  # 16 px: fits a 16 px hole exactly, but not with 2 px of overlap
  assert masks.box_around(region, 16) == (4, 6)
  with pytest.raises(ValueError, match='12x12'):
    masks.box_around(region, 16, overlap=2)


@pytest.mark.parametrize('seed', range(6))
def test_box_around_keeps_region_inside_overlap(seed):
  rng = np.random.default_rng(seed)
  hole, overlap = 16, 2
  h, w = rng.integers(1, hole - 2 * overlap + 1, 2)
  y0, x0 = rng.integers(overlap + 8, 64 - overlap - 8 - np.array([h, w]))
  region = np.zeros((64, 64), np.float32)
  region[y0 : y0 + h, x0 : x0 + w] = 1
  y, x = masks.box_around(region, hole, overlap)
  assert y + overlap <= y0 and y0 + h <= y + hole - overlap
  assert x + overlap <= x0 and x0 + w <= x + hole - overlap
  assert abs((y0 - y) - (y + hole - y0 - h)) <= 1  # centred


def test_file_mask_through_make_batch(tmp_path):
  a = np.zeros((32, 32), np.uint8)
  a[10:15, 15:21] = 255
  c = tiny(mask__kind='file', mask__file=write_png(tmp_path / 'hole.png', a))
  batch = masks.make_batch(rand_images(2), jax.random.key(0), c)
  for m in np.asarray(batch['mask'])[..., 0]:
    np.testing.assert_array_equal(m, a > 127)
  assert np.asarray(batch['box']).tolist() == [[4, 10], [4, 10]]
  assert float(batch['patch_mask'].sum()) == 2 * 30
  c.mask.file = write_png(tmp_path / 'black.png', np.zeros((32, 32)))
  with pytest.raises(ValueError, match='no white'):
    masks.make_batch(rand_images(2), jax.random.key(0), c)


# ------------------------------------------------------------------------------ make_batch


@pytest.mark.parametrize('kind', ['center', 'block', 'freeform'])
def test_make_batch(kind):
  c = tiny(mask__kind=kind)
  images = rand_images(4)
  batch = masks.make_batch(images, jax.random.key(2), c)
  img, m = np.asarray(images), np.asarray(batch['mask'])
  assert set(batch) == {'image', 'masked', 'mask', 'box', 'target', 'patch_mask'}
  assert m.shape == (4, 32, 32, 1) and batch['box'].shape == (4, 2)
  fill = np.broadcast_to(np.asarray(c.fill, np.float32), img.shape)
  np.testing.assert_array_equal(np.asarray(batch['image']), img)
  np.testing.assert_array_equal(np.asarray(batch['masked']), np.where(m > 0, fill, img))
  assert np.all(m.sum(axis=(1, 2, 3)) > 0)
  np.testing.assert_array_equal(np.asarray(batch['target']), np_crop(img, batch['box'], 16))
  np.testing.assert_array_equal(np.asarray(batch['patch_mask']), np_crop(m, batch['box'], 16))
  # The whole region lies inside the patch box.
  np.testing.assert_array_equal(
      np.asarray(batch['patch_mask']).sum(axis=(1, 2, 3)), m.sum(axis=(1, 2, 3))
  )
  # Pasting the true patch back reconstructs the image exactly.
  back = masks.paste(images, batch['target'], batch['box'], batch['mask'])
  np.testing.assert_array_equal(np.asarray(back), img)


def test_make_batch_is_jittable():
  c = tiny(mask__kind='block')
  f = jax.jit(lambda x, k: masks.make_batch(x, k, c))
  a = f(rand_images(2), jax.random.key(4))
  b = masks.make_batch(rand_images(2), jax.random.key(4), c)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_paste_only_writes_the_region():
  images = rand_images(2)
  region, corner = masks.sample(jax.random.key(0), 2, mask_cfg('block', 2), 32, 16)
  patches = jnp.full((2, 16, 16, 3), 0.25)
  out = np.asarray(masks.paste(images, patches, corner, region))
  r = np.asarray(region) > 0
  np.testing.assert_array_equal(out, np.where(r, 0.25, np.asarray(images)))


def test_fill_hole():
  images = rand_images(2)
  region = np.zeros((2, 32, 32, 1), np.float32)
  region[0, 3:5, 7:9] = 1
  out = np.asarray(masks.fill_hole(images, jnp.asarray(region), (0.1, -0.2, 0.3)))
  np.testing.assert_allclose(
      out[0, 3:5, 7:9], np.broadcast_to([0.1, -0.2, 0.3], (2, 2, 3)), rtol=1e-7
  )
  keep = np.broadcast_to(region == 0, out.shape)
  np.testing.assert_array_equal(out[keep], np.asarray(images)[keep])
  np.testing.assert_array_equal(out[1], np.asarray(images)[1])


def test_crop():
  images = jnp.arange(2 * 8 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 8, 1)
  corner = jnp.asarray([[0, 0], [4, 2]], jnp.int32)
  got = np.asarray(masks.crop(images, corner, 4))
  np.testing.assert_array_equal(got, np_crop(images, corner, 4))
  assert got[1, 0, 0, 0] == 64 + 4 * 8 + 2


# ---------------------------------------------------------------------------------- errors


def test_unknown_kind_raises():
  with pytest.raises(ValueError, match="'circle'"):
    sample('circle')


@pytest.mark.parametrize('overlap', [8, 9, -1])
def test_overlap_too_large_raises(overlap):
  with pytest.raises(ValueError, match=f'overlap={overlap}'):
    sample('center', overlap=overlap)
  assert sample('center', overlap=7)[0].sum() == 8 * 4  # 2x2 hole, 8 images
