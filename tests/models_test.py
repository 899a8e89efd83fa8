"""Tests of the networks: shapes, parameter counts, init, VAE sampling, BatchNorm, errors."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import flax  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax import losses, models
from conftest import preset, tiny

B = 2


def fast_key(seed):
  # Flax's init of even the tiny network compiles ~7 s of threefry code on 2 cores; the RBG
  # generator compiles in a fraction of that. The initialisers do not depend on the key's impl.
  return jax.random.key(seed, impl='rbg')


def rand(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


def jit_apply(module, **kw):
  return jax.jit(lambda v, *args: module.apply(v, *args, **kw))


def init(module, x, seed=0):
  return jax.jit(lambda k, x: module.init({'params': k}, x))(fast_key(seed), x)


def flat(tree):
  return {'/'.join(k): v for k, v in flax.traverse_util.flatten_dict(tree).items()}


def init_shapes(config, train=False):
  """eval_shape of init + apply of the generator (and discriminator): no compute."""
  gen, disc = models.create(config, train=train)
  image = jax.ShapeDtypeStruct((B, config.image_size, config.image_size, 3), jnp.float32)
  gen_vars = jax.eval_shape(lambda k, x: gen.init({'params': k}, x), jax.random.key(0), image)
  patch, extras = jax.eval_shape(lambda v, x: gen.apply(v, x), gen_vars, image)
  out = {'gen_vars': gen_vars, 'patch': patch, 'extras': extras}
  if disc is not None:
    p = jax.ShapeDtypeStruct((B, config.hole_size, config.hole_size, 3), jnp.float32)
    disc_vars = jax.eval_shape(lambda k, x: disc.init({'params': k}, x), jax.random.key(1), p)
    out['disc_vars'] = disc_vars
    out['logits'] = jax.eval_shape(lambda v, x: disc.apply(v, x), disc_vars, p)
  return out


# ------------------------------------------------------------------------------------- shapes

SHAPE_CASES = [
    (m, e, s, min(64, s // 2), name)
    for name in ('default', 'tiny')
    for m in models.MODELS
    for e in models.ENCODERS
    for s in models.IMAGE_SIZES
]


@pytest.mark.parametrize('model,encoder,size,hole,name', SHAPE_CASES)
def test_output_shapes_eval_shape(model, encoder, size, hole, name):
  c = preset(name, model=model, encoder=encoder, image_size=size, hole_size=hole)
  if name == 'default':
    c.bottleneck = 500  # widths 64 (the default); the shapes do not depend on N
  out = init_shapes(c)
  assert out['patch'].shape == (B, hole, hole, 3)
  assert out['patch'].dtype == jnp.float32
  if model == 'vae':
    assert out['extras']['mu'].shape == (B, c.bottleneck)
    assert out['extras']['logvar'].shape == (B, c.bottleneck)
    assert 'disc_vars' not in out
  else:
    assert out['extras'] == {}
    assert out['logits'].shape == (B,)
    assert out['logits'].dtype == jnp.float32


# ------------------------------------------------------------------------- parameter count


def test_pathak_generator_has_71m_parameters():
  # The original Torch release's generator at 128/64 with a 4000-unit bottleneck has ~71 M
  # parameters; convolutions feeding BatchNorm carry no bias, so the count is exactly:
  # encoder 2,823,104 + bottleneck 32,776,000 + decoder Dense+BN 32,769,024 + up-convs 2,756,483.
  c = preset('pathak')
  assert (c.image_size, c.hole_size, c.bottleneck, c.model) == (128, 64, 4000, 'gan')
  params = init_shapes(c)['gen_vars']['params']
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == 71_124_611


def test_pathak_only_first_conv_and_last_upconv_have_bias():
  c = preset('pathak')
  params = flat(init_shapes(c)['gen_vars']['params'])
  modules = {k.rsplit('/', 1)[0] for k in params if k.endswith('/kernel')}
  with_bias = sorted(m for m in modules if m + '/bias' in params)
  assert with_bias == ['decoder/UpConv_3', 'encoder/DownConv_0'], with_bias
  # Every BatchNorm scale sits beside a kernel without bias (5 convs + bottleneck + decoder).
  n_bn = sum(k.endswith('/scale') for k in params)
  assert n_bn == 4 + 1 + 1 + 3


@pytest.mark.parametrize('encoder', models.ENCODERS)
@pytest.mark.parametrize('model', models.MODELS)
def test_no_bias_before_batchnorm_any_encoder(model, encoder):
  """Generic check on the generator's module order: a kernel whose module is followed by a
  BatchNorm (next module in creation order within the same parent) has no bias."""
  c = tiny(model=model, encoder=encoder)
  gen, _ = models.create(c, train=True)
  image = jnp.zeros((B, c.image_size, c.image_size, 3))
  variables = jax.eval_shape(lambda k: gen.init({'params': k}, image), jax.random.key(0))

  # Record the call order of modules with capture_intermediates-like interception.
  order = []

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == '__call__':
      order.append((context.module.path, type(context.module).__name__))
    return next_fun(*args, **kwargs)

  def run(v):
    with flax.linen.intercept_methods(interceptor):
      return gen.apply(v, image, mutable=['batch_stats'])

  jax.eval_shape(run, variables)
  params = flat(variables['params'])
  checked = 0
  for (path, kind), (_, nxt) in zip(order, order[1:]):
    if kind in ('Conv', 'DownConv', 'Dense', 'UpConv') and nxt == 'BatchNorm':
      assert '/'.join(path) + '/bias' not in params, path
      checked += 1
  assert checked >= 3


# ------------------------------------------------------------------------------ encoders


def test_stage_widths():
  assert models.stage_widths(5, 64) == [64, 64, 128, 256, 512]
  assert models.stage_widths(5, 64, num_top=2) == [64, 128, 256, 512, 512]
  assert models.stage_widths(3, 64) == [128, 256, 512]
  assert models.stage_widths(6, 8)[-1] == 64


def test_pathak_encoder_stage_widths_in_params():
  c = preset('pathak')
  params = init_shapes(c)['gen_vars']['params']['encoder']
  widths = [params[f'DownConv_{i}']['kernel'].shape[-1] for i in range(5)]
  assert widths == [64, 64, 128, 256, 512]
  assert all(params[f'DownConv_{i}']['kernel'].shape[:2] == (4, 4) for i in range(5))


def test_vgg_encoder_block_widths_in_params():
  c = preset('pathak', encoder='vgg', bottleneck=500)
  params = init_shapes(c)['gen_vars']['params']['encoder']
  widths = [
      params[f'Conv_{i}']['kernel'].shape[-1] for i in range(len(params)) if f'Conv_{i}' in params
  ]
  # Blocks of 3x3 convs: two per block below 256 channels, three from 256: 64-128-256-512-512.
  assert widths == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 3 + [512] * 3
  assert all(params[f'Conv_{i}']['kernel'].shape[:2] == (3, 3) for i in range(len(widths)))


@pytest.mark.parametrize('encoder', models.ENCODERS)
@pytest.mark.parametrize('size', models.IMAGE_SIZES)
def test_encoder_ends_at_4x4x8width(encoder, size):
  for width in (8, 64):
    enc = models.ENCODER_CLASSES[encoder](width=width)
    x = jax.ShapeDtypeStruct((B, size, size, 3), jnp.float32)
    v = jax.eval_shape(lambda k, x, enc=enc: enc.init({'params': k}, x), jax.random.key(0), x)
    stages = jax.eval_shape(enc.apply, v, x)  # every stage's map, for the U-Net skips
    assert stages[-1].shape == (B, 4, 4, 8 * width), (encoder, size, width, stages[-1].shape)
    sides = [y.shape[1] for y in stages]
    assert all(a == 2 * b for a, b in zip(sides, sides[1:])), (encoder, size, sides)


# --------------------------------------------------------------------------- initialisation


@pytest.fixture(scope='module')
def pathak_init():
  # The pathak generator at 128/64 with a smaller bottleneck (the init of the 4000-unit one
  # takes 10 s of random numbers on 2 cores; the layers under test are the same).
  c = preset('pathak', bottleneck=500)
  gen, _ = models.create(c)
  v = init(gen, jnp.zeros((1, 128, 128, 3)))
  return flat(jax.device_get(v['params']))


def test_init_conv_kernels_normal_002(pathak_init):
  kernels = {k: np.asarray(v, np.float64) for k, v in pathak_init.items() if k.endswith('kernel')}
  assert len(kernels) == 5 + 1 + 1 + 4
  for k, v in kernels.items():
    if v.size >= 10_000:
      assert abs(v.std() - 0.02) < 0.05 * 0.02, (k, v.std())
      assert abs(v.mean()) < 5 * 0.02 / np.sqrt(v.size), (k, v.mean())
  everything = np.concatenate([v.ravel() for v in kernels.values()])
  assert abs(everything.std() - 0.02) < 0.001


def test_init_batchnorm_scale_and_biases(pathak_init):
  scales = np.concatenate(
      [np.asarray(v).ravel() for k, v in pathak_init.items() if k.endswith('scale')]
  )
  assert scales.size > 2000
  assert abs(scales.mean() - 1.0) < 0.002
  assert abs(scales.std() - 0.02) < 0.002
  biases = {k: np.asarray(v) for k, v in pathak_init.items() if k.endswith('bias')}
  assert len(biases) == 9 + 2  # 9 BatchNorm offsets + first conv + last up-conv
  for k, v in biases.items():
    assert np.all(v == 0), k


# --------------------------------------------------------------------------------------- VAE


@pytest.fixture(scope='module')
def tiny_vae():
  c = tiny(model='vae')
  gen, _ = models.create(c)
  x = rand((3, 32, 32, 3), 3)
  v = init(gen, x)
  return c, gen, v, x


def test_vae_sampling_is_keyed(tiny_vae):
  _, gen, v, x = tiny_vae
  apply = jax.jit(gen.apply)
  a, ea = apply(v, x, fast_key(7))
  b, _ = apply(v, x, fast_key(7))
  c, _ = apply(v, x, fast_key(8))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.max(np.abs(np.asarray(a) - np.asarray(c))) > 1e-4
  # eval path: z = mu, deterministic, and equal to decoding mu.
  m1, e1 = apply(v, x)
  m2, _ = apply(v, x)
  np.testing.assert_array_equal(np.asarray(m1), np.asarray(m2))
  np.testing.assert_array_equal(np.asarray(e1['mu']), np.asarray(ea['mu']))
  assert np.max(np.abs(np.asarray(m1) - np.asarray(a))) > 1e-4
  decoder = models.Decoder(width=8, hole_size=16)
  decoded = jit_apply(decoder)(
      {'params': v['params']['decoder'], 'batch_stats': v['batch_stats']['decoder']}, e1['mu']
  )
  np.testing.assert_allclose(np.asarray(decoded), np.asarray(m1), atol=1e-6)


def test_vae_sampling_uses_sigma(tiny_vae):
  """With the logvar head pushed to -inf, z = mu even with a key."""
  _, gen, v, x = tiny_vae
  params = dict(v['params'])
  params['logvar'] = {
      'kernel': jnp.zeros_like(params['logvar']['kernel']),
      'bias': jnp.full_like(params['logvar']['bias'], -200.0),
  }
  v2 = {'params': params, 'batch_stats': v['batch_stats']}
  apply = jit_apply(gen)
  a, _ = apply(v2, x, fast_key(7))
  m, _ = apply(v2, x)
  np.testing.assert_allclose(np.asarray(a), np.asarray(m), atol=1e-6)


# ------------------------------------------------------------------------ gradients reach all


def _nonzero_everywhere(grads):
  return {k: bool(np.any(np.asarray(g) != 0)) for k, g in flat(grads).items()}


# Encoders are shared by both models: the GAN (with its discriminator) on pathak, the VAE on all.
@pytest.mark.parametrize(
    'model,encoder', [('gan', 'pathak')] + [('vae', e) for e in models.ENCODERS]
)
def test_gradients_reach_every_parameter(model, encoder):
  c = tiny(model=model, encoder=encoder)
  gen, disc = models.create(c, train=True)
  x = rand((4, 32, 32, 3), 0)
  target = rand((4, 16, 16, 3), 1)
  key = fast_key(9)
  mask = np.zeros((4, 16, 16, 1), np.float32)
  mask[:, 2:14, 2:14] = 1
  batch = {'target': target, 'patch_mask': jnp.asarray(mask)}
  gv = init(gen, x, 2)

  def gen_loss(params, disc_vars):
    (pred, extras), _ = gen.apply(
        {'params': params, 'batch_stats': gv['batch_stats']}, x, key, mutable=['batch_stats']
    )
    if model == 'vae':
      return losses.vae_loss(pred, extras['mu'], extras['logvar'], batch, c)[0]
    logits, _ = disc.apply(disc_vars, pred, mutable=['batch_stats'])
    return losses.gan_generator_loss(pred, logits, batch, c)[0]

  dv = None
  if model == 'gan':
    dv = init(disc, target, 3)

  @jax.jit
  def grads(gp, dv):
    g = jax.grad(gen_loss)(gp, dv)
    if dv is None:
      return g, None
    pred = gen.apply({'params': gp, 'batch_stats': gv['batch_stats']}, x, mutable=['batch_stats'])[
        0
    ][0]

    def d_loss(dp):
      real, _ = disc.apply(
          {'params': dp, 'batch_stats': dv['batch_stats']}, target, mutable=['batch_stats']
      )
      fake, _ = disc.apply(
          {'params': dp, 'batch_stats': dv['batch_stats']}, pred, mutable=['batch_stats']
      )
      return losses.discriminator_loss(real, fake)

    return g, jax.grad(d_loss)(dv['params'])

  g, d = grads(gv['params'], dv)
  nz = _nonzero_everywhere(g)
  assert all(nz.values()), [k for k, v in nz.items() if not v]
  assert len(nz) == len(flat(gv['params']))
  if d is not None:
    nz = _nonzero_everywhere(d)
    assert all(nz.values()), [k for k, v in nz.items() if not v]


# ------------------------------------------------------------------------------- BatchNorm


@pytest.fixture(scope='module')
def tiny_gan():
  c = tiny()
  x = rand((4, 32, 32, 3), 5)
  gen, _ = models.create(c)
  v = init(gen, x)
  return c, v, x


def test_batchnorm_updates_only_in_training(tiny_gan):
  c, v, x = tiny_gan
  gen_train, _ = models.create(c, train=True)
  (_, _), upd = jit_apply(gen_train, mutable=['batch_stats'])(v, x)
  before, after = flat(v['batch_stats']), flat(upd['batch_stats'])
  assert before.keys() == after.keys()
  assert all(not np.allclose(before[k], after[k]) for k in before)
  # The running mean moves 10 % of the way to the batch mean (Torch momentum 0.1).
  k = 'bottleneck_bn/var'
  assert np.all(np.asarray(after[k]) < np.asarray(before[k]))  # from 1 towards a tiny variance

  gen_eval, _ = models.create(c)
  assert not gen_eval.train
  (_, _), upd = jit_apply(gen_eval, mutable=['batch_stats'])(v, x)
  for key, value in flat(upd['batch_stats']).items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(before[key]))


def test_eval_output_independent_of_batch(tiny_gan):
  c, v, x = tiny_gan
  gen, _ = models.create(c)
  apply = jit_apply(gen)
  full, _ = apply(v, x)
  one, _ = apply(v, x[:1])
  np.testing.assert_allclose(np.asarray(full[0]), np.asarray(one[0]), atol=1e-5)
  # ...whereas in training mode BatchNorm mixes the examples of a batch.
  gen_t, _ = models.create(c, train=True)
  apply_t = jit_apply(gen_t, mutable=['batch_stats'])
  (full_t, _), _ = apply_t(v, x)
  (two_t, _), _ = apply_t(v, x[:2])
  assert np.max(np.abs(np.asarray(full_t[0]) - np.asarray(two_t[0]))) > 1e-4


# -------------------------------------------------------------------------------- bfloat16


@pytest.mark.parametrize('model', models.MODELS)
def test_bfloat16_compute(model):
  c32 = tiny(model=model)
  c16 = tiny(model=model, dtype='bfloat16')
  # Training-mode BatchNorm normalises the activations; at init the eval-mode output is ~1e-5
  # (running statistics 0 / 1 against N(0, 0.02) weights) and would compare nothing.
  g32, d32 = models.create(c32, train=True)
  g16, d16 = models.create(c16, train=True)
  x = rand((4, 32, 32, 3), 5)
  v16 = init(g16, x)
  v32 = init(g32, x)
  for a, b in zip(jax.tree.leaves(v16), jax.tree.leaves(v32)):
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  apply = lambda m: jax.jit(lambda v, x: m.apply(v, x, mutable=['batch_stats'])[0])
  y16, _ = apply(g16)(v32, x)
  y32, _ = apply(g32)(v32, x)
  assert y16.dtype == jnp.float32
  err = np.abs(np.asarray(y16) - np.asarray(y32))
  scale = np.abs(np.asarray(y32)).mean()
  assert scale > 1e-2
  assert err.mean() < 0.05 * scale, (err.mean(), scale)
  assert err.max() > 0  # really computed in a different precision
  if model == 'gan':
    dv = init(d32, y32, 1)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(init(d16, y32, 1)))
    l16 = apply(d16)(dv, y32)
    l32 = apply(d32)(dv, y32)
    assert l16.shape == (4,) and l16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(l16), np.asarray(l32), atol=0.05 * np.abs(l32).max())


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    'field,value',
    [
        ('model', 'diffusion'),
        ('encoder', 'vit'),
        ('image_size', 100),
        ('image_size', 512),
        ('hole_size', 48),
        ('hole_size', 0),
        ('dtype', 'float16'),
        ('bottleneck', 0),
    ],
)
def test_create_rejects_bad_config(field, value):
  c = tiny(**{field: value})
  with pytest.raises(ValueError) as e:
    models.create(c)
  msg = str(e.value)
  assert '\n' not in msg
  assert str(value) in msg


def test_create_rejects_unknown_conv_impl():
  with pytest.raises(ValueError, match='nearest'):
    models.create(tiny(conv_impl='nearest'))


def test_hole_larger_than_image_rejected():
  with pytest.raises(ValueError, match='hole_size=64'):
    models.create(tiny(hole_size=64))
