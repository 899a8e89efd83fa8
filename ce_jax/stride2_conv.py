"""4x4 stride-2 convolutions and transposed convolutions (Torch's SpatialConvolution and
SpatialFullConvolution(4, 4, 2, 2, 1, 1)), the original's down- and up-sampling layers.

With impl='phase' the transposed convolution runs by output phases (one 2x2 convolution for all
four), both as the up-convolution and as the strided convolution's input gradient (a custom
VJP): no dilated convolution, which XLA's CPU backend runs 3x slower. impl='xla' leaves both to
XLA. The parameters are the same either way, so checkpoints move freely between them.

    down = stride2_conv.DownConv(64)                 # kernel (4, 4, C, 64), impl='phase'
    y = down.apply({'params': {'kernel': k}}, x)     # (B, H, W, C) -> (B, H/2, W/2, 64)
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CONV_IMPLS = ('phase', 'xla')
_DN = ('NHWC', 'HWIO', 'NHWC')
_PHASE_TAPS = np.array([[3, 1], [2, 0]])  # [output phase][2x2 window row] -> 4x4 kernel row


def _conv_s2(x, kernel):
  """4x4 stride-2 padding-1 convolution, (B, H, W, I) x (4, 4, I, O) -> (B, H/2, W/2, O)."""
  return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN)


def _conv_s2_kernel_grad(x, dy, kernel):
  return jax.vjp(lambda k: _conv_s2(x, k), kernel)[1](dy)[0]


def _conv_s2_transpose(y, kernel):
  """The adjoint of `_conv_s2(., kernel)`: (B, h, w, O) -> (B, 2h, 2w, I), by phases.

  Output phase (a, b) of the 2x-upsampled map (rows 2m + a, columns 2n + b) is a 2x2 convolution
  of the once-padded input at window (m + a, n + b); one stride-1 2x2 convolution to 4*I channels
  computes all four phases, which are then interleaved. Only (h+1)(w+1)/(hw) of the exact FLOPs,
  and no dilated convolution, which XLA's CPU backend runs 3x slower.
  """
  b, h, w, _ = y.shape
  i = kernel.shape[2]
  k = kernel[_PHASE_TAPS[:, :, None, None], _PHASE_TAPS[None, None]]  # (a, t, b, s, I, O)
  k = k.transpose(1, 3, 5, 0, 2, 4).reshape(2, 2, -1, 4 * i)  # (t, s, O, (a, b, I))
  y = jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))
  z = jax.lax.conv_general_dilated(y, k, (1, 1), 'VALID', dimension_numbers=_DN)
  z = z.reshape(b, h + 1, w + 1, 2, 2, i)
  rows = [jnp.stack([z[:, a : a + h, c : c + w, a, c] for c in (0, 1)], axis=3) for a in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, i)  # (b, h, a, w, c, I) -> interleaved


def _with_adjoint_vjp(primal, adjoint, kernel_grad):
  """`primal(x, kernel)` whose input gradient is `adjoint(g, kernel)`, its kernel gradient
  `kernel_grad(x, g, kernel)`."""

  @jax.custom_vjp
  def op(x, kernel):
    return primal(x, kernel)

  def fwd(x, kernel):
    return primal(x, kernel), (x, kernel)

  def bwd(res, g):
    x, kernel = res
    return adjoint(g, kernel), kernel_grad(x, g, kernel)

  op.defvjp(fwd, bwd)
  return op


# `_conv_s2` with its input gradient computed by phases, and its transpose (by phases) whose
# input gradient is the plain strided convolution: each is the other's adjoint.
conv_down = _with_adjoint_vjp(_conv_s2, _conv_s2_transpose, _conv_s2_kernel_grad)
conv_up = _with_adjoint_vjp(
    _conv_s2_transpose, _conv_s2, lambda y, dx, kernel: _conv_s2_kernel_grad(dx, y, kernel)
)


def up_conv(x, kernel, impl: str = 'phase'):
  """Torch's SpatialFullConvolution(4, 4, 2, 2, 1, 1) of x with a (4, 4, in, out) kernel."""
  if impl == 'phase':
    return conv_up(x, kernel.swapaxes(2, 3))  # the transpose of a conv from `out` to `in`
  # A transposed conv correlates the 2x-dilated input with the spatially flipped kernel.
  return jax.lax.conv_transpose(
      x, kernel[::-1, ::-1], (2, 2), ((2, 2), (2, 2)), dimension_numbers=_DN
  )


class _Stride2Conv(nn.Module):
  """A 4x4 stride-2 (transposed) convolution's parameters: kernel (k, k, in, out), optional bias.

  kernel_init defaults to nn.Conv's; the networks pass their own.
  """

  features: int
  use_bias: bool = False
  impl: str = 'phase'
  dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  kernel_size = 4  # k of the kernel parameter, which `full_kernel` maps to the 4x4 one applied

  def full_kernel(self, kernel):
    return kernel

  def apply_kernel(self, x, kernel):
    raise NotImplementedError

  @nn.compact
  def __call__(self, x):
    if self.impl not in CONV_IMPLS:
      raise ValueError(f"Unknown conv_impl {self.impl!r}; use one of: {', '.join(CONV_IMPLS)}.")
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    y = self.apply_kernel(x.astype(self.dtype), self.full_kernel(kernel).astype(self.dtype))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(y.dtype)
    return y


class DownConv(_Stride2Conv):
  """4x4 stride-2 convolution (Torch's SpatialConvolution(4, 4, 2, 2, 1, 1)).

  impl='phase' computes its input gradient with `conv_up`; impl='xla' leaves it to XLA's
  autodiff (a dilated convolution).
  """

  def apply_kernel(self, x, kernel):
    return conv_down(x, kernel) if self.impl == 'phase' else _conv_s2(x, kernel)


class UpConv(_Stride2Conv):
  """4x4 stride-2 transposed convolution (Torch's SpatialFullConvolution(4, 4, 2, 2, 1, 1)).

  impl='phase' runs it as `conv_up` (one 2x2 convolution for all four output phases; its input
  gradient is a plain strided convolution); impl='xla' uses lax.conv_transpose.
  """

  def apply_kernel(self, x, kernel):
    return up_conv(x, kernel, self.impl)


# Nearest x2 up-sampling then a 3x3 convolution is a 4x4 stride-2 transposed convolution whose
# kernel rows are sums of the 3x3 kernel's rows: out[2m] = w0 x[m-1] + (w1 + w2) x[m] and
# out[2m+1] = (w0 + w1) x[m] + w2 x[m+1], i.e. 4x4 rows (w2, w1 + w2, w0 + w1, w0).
_NEAREST_TAPS = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], np.float32)


class NearestUpConv(UpConv):
  """Nearest-neighbour x2 up-sampling, then a 3x3 convolution (parameters: its 3x3 kernel).

  Every output pixel gets the same number of taps, so it cannot paint the checkerboard of a
  transposed convolution; computed as one (`up_conv`), by phases, at a transposed conv's cost.
  """

  kernel_size = 3

  def full_kernel(self, kernel):
    return jnp.einsum('ya,xb,abio->yxio', _NEAREST_TAPS, _NEAREST_TAPS, kernel)
