"""The 4x4 stride-2 (transposed) convolutions against float64 references of Torch's layers, and
the phase implementation's gradients against XLA's autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax import stride2_conv

CONV_IMPLS = stride2_conv.CONV_IMPLS
LAYERS = (stride2_conv.DownConv, stride2_conv.UpConv, stride2_conv.NearestUpConv)


def torch_full_conv_reference(x, w, b=None):
  """SpatialFullConvolution(4, 4, 2, 2, 1, 1) in float64:
  out[2i-1+ty, 2j-1+tx] += x[i,j] @ W[ty,tx]."""
  n, h, wd, _ = x.shape
  o = w.shape[-1]
  out = np.zeros((n, 2 * h + 2, 2 * wd + 2, o))  # 1 px of margin each side for the padding
  for ty in range(4):
    for tx in range(4):
      contrib = np.einsum('nhwi,io->nhwo', x, w[ty, tx])
      out[:, ty : ty + 2 * h : 2, tx : tx + 2 * wd : 2] += contrib  # index 2i-1+ty, shifted by +1
  out = out[:, 1:-1, 1:-1]
  return out if b is None else out + b


@pytest.mark.parametrize(
    'layer,kernel',
    [(stride2_conv.DownConv, 4), (stride2_conv.UpConv, 4), (stride2_conv.NearestUpConv, 3)],
)
def test_impls_share_parameters(layer, kernel):
  x = jnp.ones((1, 4, 4, 3))
  shapes = {
      impl: jax.tree.map(
          lambda a: (a.shape, a.dtype),
          jax.eval_shape(layer(5, use_bias=True, impl=impl).init, jax.random.key(0), x),
      )
      for impl in CONV_IMPLS
  }
  assert (
      shapes['phase']
      == shapes['xla']
      == {'params': {'kernel': ((kernel, kernel, 3, 5), jnp.float32), 'bias': ((5,), jnp.float32)}}
  )


@pytest.mark.parametrize('layer', LAYERS)
def test_conv_unknown_impl_raises(layer):
  with pytest.raises(ValueError, match='nearest'):
    layer(5, impl='nearest').init(jax.random.key(0), jnp.ones((1, 4, 4, 3)))


def torch_conv_reference(x, w, b=None):
  """SpatialConvolution(4, 4, 2, 2, 1, 1) in float64:
  out[i, j] = sum x[2i-1+ty, 2j-1+tx] @ W[ty, tx]."""
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, wd = x.shape[1] // 2, x.shape[2] // 2
  out = sum(
      np.einsum('nhwi,io->nhwo', xp[:, ty : ty + 2 * h : 2, tx : tx + 2 * wd : 2], w[ty, tx])
      for ty in range(4)
      for tx in range(4)
  )
  return out if b is None else out + b


@pytest.mark.parametrize('impl', CONV_IMPLS)
@pytest.mark.parametrize('use_bias', [False, True])
@pytest.mark.parametrize(
    'layer,reference,in_shape,out_shape',
    [
        (stride2_conv.UpConv, torch_full_conv_reference, (2, 5, 3, 4), (2, 10, 6, 6)),
        (stride2_conv.DownConv, torch_conv_reference, (2, 10, 6, 4), (2, 5, 3, 6)),
    ],
)
def test_stride2_convs_match_torch(layer, reference, in_shape, out_shape, impl, use_bias):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(in_shape)
  w = rng.standard_normal((4, 4, 4, 6))
  b = rng.standard_normal(6)
  ref = reference(x, w, b if use_bias else None)
  assert ref.shape == out_shape
  with jax.enable_x64(True):
    params = {'kernel': jnp.asarray(w)} | ({'bias': jnp.asarray(b)} if use_bias else {})
    y = layer(6, use_bias=use_bias, impl=impl, dtype=jnp.float64).apply(
        {'params': params}, jnp.asarray(x)
    )
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(y), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    'layer,in_shape',
    [
        (stride2_conv.DownConv, (2, 8, 6, 3)),
        (stride2_conv.UpConv, (2, 4, 3, 3)),
        (stride2_conv.NearestUpConv, (2, 4, 3, 3)),
    ],
)
def test_phase_gradients_equal_xla_autodiff(layer, in_shape):
  """The phase impl's custom VJPs give the same input and kernel gradients as autodiff of
  XLA's own convolutions, in float64."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal(in_shape)
  w = rng.standard_normal((layer.kernel_size, layer.kernel_size, 3, 5))
  with jax.enable_x64(True):
    out_shape = jax.eval_shape(
        lambda x: layer(5, impl='xla', dtype=jnp.float64).apply({'params': {'kernel': w}}, x),
        jnp.asarray(x),
    ).shape
    cot = jnp.asarray(rng.standard_normal(out_shape))

    def grads(impl):
      f = lambda k, x: jnp.vdot(  # noqa: E731
          layer(5, impl=impl, dtype=jnp.float64).apply({'params': {'kernel': k}}, x), cot
      )
      return jax.grad(f, argnums=(0, 1))(jnp.asarray(w), jnp.asarray(x))

    for got, want in zip(grads('phase'), grads('xla')):
      assert got.shape == want.shape
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-10)


@pytest.mark.parametrize('impl', CONV_IMPLS)
def test_nearest_up_conv_is_nearest_upsampling_then_3x3_conv(impl):
  """Against a float64 reference: repeat every pixel 2x2, then a 3x3 SAME convolution."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 6, 4))
  w = rng.normal(size=(3, 3, 4, 7))
  up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
  padded = np.pad(up, ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = sum(
      np.einsum('bhwi,io->bhwo', padded[:, dy : dy + 10, dx : dx + 12], w[dy, dx])
      for dy in range(3)
      for dx in range(3)
  )
  with jax.enable_x64():
    layer = stride2_conv.NearestUpConv(7, impl=impl, dtype=jnp.float64)
    got = layer.apply({'params': {'kernel': jnp.asarray(w)}}, jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
