"""The pieces of the shipped model's recipe: U-Net skips, resize-conv up-sampling, the cosine
schedule, the weight EMA, reconstruction-only GAN steps, and generator exports."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ce_jax import checkpoints, losses, models, sharding, steps
from conftest import host, init_state, preset, random_batch, tiny


def test_box_features_crop_each_map_over_the_patch():
  # 64 px image, 32 px patch at (16, 8): a 32x32 map (stride 2) is cropped to 16x16 at (8, 4),
  # a 16x16 map (stride 4) to 8x8 at (4, 2); the 64x64 map (the patch's own resolution) and
  # the 4x4 map (side 2, below the decoder's first level) give nothing.
  rng = np.random.default_rng(0)
  stages = [jnp.asarray(rng.normal(size=(2, s, s, 3)), jnp.float32) for s in (64, 32, 16, 8, 4)]
  corner = jnp.array([[16, 8], [0, 32]])
  out = models.box_features(stages, corner, 64, 32)
  assert sorted(out) == [4, 8, 16]
  np.testing.assert_array_equal(out[16][0], stages[1][0, 8:24, 4:20])
  np.testing.assert_array_equal(out[8][0], stages[2][0, 4:12, 2:10])
  np.testing.assert_array_equal(out[4][1], stages[3][1, 0:4, 4:8])


@pytest.mark.parametrize('upsample', models.UPSAMPLES)
def test_skip_generator_follows_the_patch_corner(upsample):
  config = tiny(skips=True, upsample=upsample)
  gen, _ = models.create(config)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
  variables = jax.jit(gen.init)(jax.random.key(1), x)
  apply = jax.jit(lambda v, x, corner: gen.apply(v, x, corner=corner)[0])
  centre = jnp.full((2, 2), (32 - 16) // 2, jnp.int32)
  np.testing.assert_array_equal(apply(variables, x, None), apply(variables, x, centre))
  top_left = jnp.zeros((2, 2), jnp.int32)
  assert not np.allclose(apply(variables, x, top_left), apply(variables, x, centre))
  # The same config without skips has a decoder with fewer input channels, nothing else.
  plain = jax.eval_shape(models.create(tiny(upsample=upsample))[0].init, jax.random.key(1), x)
  assert set(jax.tree.leaves(jax.tree.map(lambda a: a.ndim, plain))) == set(
      jax.tree.leaves(jax.tree.map(lambda a: a.ndim, variables))
  )


def test_inpaint_preset_is_the_shipped_architecture():
  config = preset('inpaint')
  gen, disc = models.create(config)
  x = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, 128, 128, 1), jnp.float32)
  v = jax.eval_shape(lambda k, x, m: gen.init(k, x, mask=m), jax.random.key(0), x, mask)
  n = sum(a.size for a in jax.tree.leaves(v['params']))
  # The mask channel adds 4 x 4 x 32 weights to the first conv. 17.5 MB in float16: within
  # the package's 25 MB budget.
  assert n == 9_484_851, n
  patch, _ = jax.eval_shape(lambda v, x, m: gen.apply(v, x, mask=m), v, x, mask)
  assert patch.shape == (1, 64, 64, 3)


def test_cosine_schedule_warms_up_and_decays_to_zero():
  config = tiny(optim__schedule='cosine', optim__warmup_steps=10, num_steps=110)
  lr = steps.learning_rate(config, 1e-3)
  np.testing.assert_allclose(
      [lr(0), lr(5), lr(10), lr(60), lr(110)], [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-9
  )
  with pytest.raises(ValueError, match='set --num_steps'):
    steps.validate(tiny(optim__schedule='cosine', num_steps=-1))
  with pytest.raises(ValueError, match="optim.schedule='linear'"):
    steps.validate(tiny(optim__schedule='linear'))
  with pytest.raises(ValueError, match='ema_decay=1.0 must be in'):
    steps.validate(tiny(optim__ema_decay=1.0))


def test_ema_update_against_float64_reference():
  rng = np.random.default_rng(0)
  ema, params = rng.normal(size=5), rng.normal(size=5)
  for step, decay in ((0, 0.999), (5, 0.999), (10_000, 0.999), (10_000, 0.5)):
    d = min(decay, (1 + step) / (10 + step))
    got = steps.update_ema(
        jnp.asarray(ema, jnp.float32), jnp.asarray(params, jnp.float32), step, decay
    )
    np.testing.assert_allclose(got, d * ema + (1 - d) * params, rtol=1e-6)


def test_reconstruction_only_gan_step_is_the_l2_step():
  """adv_weight=0: the generator follows the gradient of the masked L2 alone (checked with SGD
  against jax.grad of the loss), its EMA moves, and the discriminator is left untouched."""
  config = tiny(loss__adv_weight=0.0, loss__rec_weight=0.5, optim__ema_decay=0.9)
  state = init_state(config)
  batch = random_batch(config)
  before = host(state)
  gen, _ = models.create(config, train=True)

  def loss(params):
    (pred, _), _ = gen.apply(
        {'params': params, 'batch_stats': before.gen.batch_stats},
        batch['masked'],
        mutable=['batch_stats'],
    )
    return 0.5 * losses.reconstruction_loss(pred, batch, config)

  want = jax.grad(loss)(before.gen.params)
  sgd = optax.sgd(1.0)
  state = state.replace(gen=state.gen.replace(opt_state=sgd.init(state.gen.params)))
  orig = steps.optimizers
  steps.optimizers = lambda c: (sgd, orig(c)[1])
  try:
    new, metrics = steps.make_train_step(config, sharding.data_mesh())(state, batch)
  finally:
    steps.optimizers = orig
  got = jax.tree.map(lambda a, b: a - np.asarray(b), before.gen.params, host(new.gen.params))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(
        g, w, rtol=1e-2, atol=1e-3 * np.abs(w).max()
    )  # p - (p - g): float32 round-off
  assert set(host(metrics)) == {'g_loss', 'rec_loss'}
  same = jax.tree.map(np.array_equal, before.disc.params, host(new.disc.params))
  assert all(jax.tree.leaves(same))
  # EMA after step 0: d = min(0.9, 1/10) = 0.1 of the old weights.
  for e, p0, p1 in zip(
      jax.tree.leaves(host(new.gen_ema)),
      jax.tree.leaves(before.gen.params),
      jax.tree.leaves(host(new.gen.params)),
  ):
    np.testing.assert_allclose(e, 0.1 * p0 + 0.9 * p1, rtol=1e-5, atol=1e-7)


def test_export_round_trip_in_float16(tmp_path):
  config = tiny(skips=True, optim__ema_decay=0.99)
  variables, _ = steps.init_variables(config, jax.random.PRNGKey(0))
  checkpoints.export_generator(tmp_path / 'exp', config, variables, step=7)
  loaded_config, loaded, step = checkpoints.load_generator(tmp_path / 'exp')
  assert step == 7 and loaded_config.skips and loaded_config.optim.ema_decay == 0.99
  for a, b in zip(jax.tree.leaves(host(variables)), jax.tree.leaves(host(loaded))):
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, a.astype(np.float16).astype(np.float32))


def test_bilinear_upsampling_equals_jax_image_resize():
  x = np.random.default_rng(0).normal(size=(2, 5, 7, 3))
  with jax.enable_x64():
    want = jax.image.resize(jnp.asarray(x), (2, 10, 14, 3), 'bilinear')
    got = models.upsample2_bilinear(jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize('kind', ['center', 'freeform'])
def test_inpaint_shows_a_square_hole_model_the_square_it_learnt(kind):
  """A model trained on square holes sees the square of its training around a thin stroke; one
  trained on free-form holes sees the stroke itself. Only the stroke is painted either way."""
  from ce_jax import inpaint  # pylint: disable=g-import-not-at-top

  config = tiny(mask__kind=kind)  # 32 px images, 16 px patch, 2 px overlap: a 12x12 square
  seen = {}

  def predict(variables, batch):
    del variables
    seen['mask'] = np.asarray(batch['mask'])[0, ..., 0]
    return jnp.ones_like(batch['image'])  # paints white

  photo = np.zeros((64, 64, 3), np.uint8)
  hole = np.zeros((64, 64), bool)
  hole[20:40, 30] = True  # a 1 px wide, 20 px long stroke
  out = inpaint.inpaint_photo(photo, hole, config, None, predict, blend=0)
  mask = seen['mask']
  if kind == 'center':
    assert mask.sum() == 12 * 12
    ys, xs = np.nonzero(mask)
    assert ys.max() - ys.min() == xs.max() - xs.min() == 11
  else:
    assert 0 < mask.sum() < 12 * 6
  assert (out[hole] == 255).all() and (out[~hole] == 0).all()
