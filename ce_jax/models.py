"""Context-encoder networks in Flax linen: encoders, the bottleneck, the decoder, VAE, GAN.

Every encoder maps an (S, S, 3) image to a 4x4x(8*width) feature map for S in {32, 64, 128, 256}
(the number of stride-2 stages follows from S; it returns every stage's map, the 4x4 one last);
the bottleneck flattens it to N numbers; the one decoder paints the (hole, hole, 3) patch with
tanh. With `skips`, each decoder level also sees the encoder's features of the patch box at the
same resolution (a U-Net over the hole): the code carries the scene, the skips carry the hole's
border, which the 1x1 code alone paints with seams. Convolutions followed by BatchNorm carry no
bias, and weights start from N(0, 0.02), BatchNorm scales from N(1, 0.02), as the original release.

    generator, discriminator = models.create(config)   # discriminator is None for the VAE
    variables = generator.init({'params': key}, masked_images)
    patch, extras = generator.apply(variables, masked_images)          # eval: z = mu for the VAE
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import masks, stride2_conv

ENCODERS = ('pathak', 'alexnet', 'vgg', 'resnet')
MODELS = ('vae', 'gan')
IMAGE_SIZES = (32, 64, 128, 256)

weight_init = nn.initializers.normal(stddev=0.02)
UPSAMPLES = ('deconv', 'nearest', 'bilinear')
# The smallest image std (in [-1, 1]) a residual generator divides by: flat photos (a black
# stage) are not amplified into noise.
MIN_STD = 0.05


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def stage_widths(num_stages: int, width: int, num_top: int = 1) -> list[int]:
  """Channels of each stride-2 stage, doubling up to 8*width for the last `num_top` stages.

  pathak at 128 px (5 stages): 64-64-128-256-512, as the original; vgg (num_top=2): 64-128-256-512-512.
  """
  top = num_stages - num_top
  return [width * 2 ** int(np.clip(3 - (top - i), 0, 3)) for i in range(num_stages)]


def lrelu(x):
  """LeakyReLU 0.2, the original's activation in the encoder, bottleneck and discriminator."""
  return nn.leaky_relu(x, 0.2)


def _log2(n: int, what: str) -> int:
  k = int(round(math.log2(n))) if n > 0 else -1
  if n <= 0 or 2**k != n:
    raise ValueError(f'{what}={n} must be a power of two.')
  return k


class _Layers(nn.Module):
  """Shared conv / norm factories and the conv block: one place for init, dtype, the conv's
  bias and cross-device BatchNorm."""

  train: bool = False
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = 'phase'

  def down(self, features, bias=False):
    """4x4 stride-2 convolution, the original's (see `stride2_conv.DownConv`)."""
    return stride2_conv.DownConv(
        features, use_bias=bias, impl=self.conv_impl, dtype=self.dtype, kernel_init=weight_init
    )

  def conv(self, features, kernel, stride=1, bias=False, padding='SAME', name=None):
    return nn.Conv(
        features,
        (kernel, kernel),
        (stride, stride),
        padding=padding,
        use_bias=bias,
        kernel_init=weight_init,
        dtype=self.dtype,
        name=name,
    )

  def norm(self, name=None):
    return nn.BatchNorm(
        use_running_average=not self.train,
        momentum=0.9,
        epsilon=1e-5,
        scale_init=bn_scale_init,
        axis_name=self.axis_name,
        dtype=self.dtype,
        name=name,
    )

  def conv_block(self, x, make_conv, *conv_args, norm=True, act=lrelu):
    """act(BatchNorm(conv(x))) with the conv `make_conv(*conv_args, bias=...)`, which carries a
    bias only where no BatchNorm follows (BN's offset is one). norm=False: no BatchNorm;
    act=None: no activation. The submodules are the caller's, named as if it made them."""
    x = make_conv(*conv_args, bias=not norm)(x)
    x = self.norm()(x) if norm else x
    return x if act is None else act(x)


class PathakEncoder(_Layers):
  """The original: 4x4 stride-2 convs, LeakyReLU 0.2, BatchNorm on all but the first."""

  width: int = 64

  @nn.compact
  def __call__(self, x):
    n = _log2(x.shape[1], 'image_size') - 2
    stages = []
    for i, c in enumerate(stage_widths(n, self.width)):
      x = self.conv_block(x, self.down, c, norm=i > 0)
      stages.append(x)
    return stages


class AlexNetEncoder(_Layers):
  """AlexNet-flavoured: 11x11 stride-4 stem, 5x5 / 3x3 stride-2 convs, then 3x3 to 8*width.

  At 256 px: six conv-BN-LeakyReLU sets, 96-256-384-384-256-512 channels (the report's encoder).
  """

  width: int = 64

  @nn.compact
  def __call__(self, x):
    n = _log2(x.shape[1], 'image_size') - 4  # stride-2 stages after the stride-4 stem
    if n < 1:
      raise ValueError('The alexnet encoder needs image_size >= 32.')
    x = self.conv_block(x, self.conv, self.width * 3 // 2, 11, 4, norm=False)
    stages = [x]
    alexnet = (4, 6, 6, 4)  # conv2..conv5 widths of AlexNet, in units of width / 64 * 64
    for i in range(n):
      x = self.conv_block(x, self.conv, self.width * alexnet[i % 4], 5 if i == 0 else 3, 2)
      stages.append(x)
    return stages[:-1] + [self.conv_block(x, self.conv, self.width * 8, 3)]


class VGGEncoder(_Layers):
  """VGG-flavoured: blocks of 3x3 convs (2, then 3 from 256 channels), the last of each stride 2."""

  width: int = 64

  @nn.compact
  def __call__(self, x):
    n = _log2(x.shape[1], 'image_size') - 2
    first = True
    stages = []
    for c in stage_widths(n, self.width, num_top=2):
      reps = 2 if c < 4 * self.width else 3
      for r in range(reps):
        x = self.conv_block(x, self.conv, c, 3, 2 if r == reps - 1 else 1, norm=not first)
        first = False
      stages.append(x)
    return stages


class BasicBlock(_Layers):
  """ResNet basic block: two 3x3 convs with BatchNorm, projected shortcut when the shape changes."""

  features: int = 64
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    y = self.conv_block(x, self.conv, self.features, 3, self.stride, act=nn.relu)
    y = self.conv_block(y, self.conv, self.features, 3, act=None)
    if x.shape != y.shape:
      x = self.conv_block(x, self.conv, self.features, 1, self.stride, act=None)
    return nn.relu(x + y)


class ResNetEncoder(_Layers):
  """ResNet-18-flavoured: 7x7 stride-2 stem, then stages of two basic blocks, each stage stride 2."""

  width: int = 64

  @nn.compact
  def __call__(self, x):
    n = _log2(x.shape[1], 'image_size') - 3
    x = self.conv_block(x, self.conv, self.width, 7, 2, act=nn.relu)
    stages = [x]
    block = functools.partial(
        BasicBlock,
        train=self.train,
        axis_name=self.axis_name,
        dtype=self.dtype,
        conv_impl=self.conv_impl,
    )
    for c in stage_widths(n, self.width):
      x = block(features=c, stride=2)(x)
      x = block(features=c, stride=1)(x)
      stages.append(x)
    return stages


ENCODER_CLASSES = {
    'pathak': PathakEncoder,
    'alexnet': AlexNetEncoder,
    'vgg': VGGEncoder,
    'resnet': ResNetEncoder,
}


def _upsample2_axis(x, axis: int):
  """x2 linear interpolation along `axis` with half-pixel centres and clamped edges: output
  2i is 3/4 x[i] + 1/4 x[i-1], output 2i+1 is 3/4 x[i] + 1/4 x[i+1]."""
  n = x.shape[axis]
  take = lambda start, stop: jax.lax.slice_in_dim(x, start, stop, axis=axis)
  prev = jnp.concatenate([take(0, 1), take(0, n - 1)], axis)
  nxt = jnp.concatenate([take(1, n), take(n - 1, n)], axis)
  y = jnp.stack([0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt], axis + 1)
  return y.reshape(x.shape[:axis] + (2 * n,) + x.shape[axis + 1 :])


def upsample2_bilinear(x):
  """(B, H, W, C) -> (B, 2H, 2W, C), equal to jax.image.resize(..., 'bilinear') but built from
  shifts and adds, which XLA's CPU backend runs several times faster (forward and backward)."""
  return _upsample2_axis(_upsample2_axis(x, 1), 2)


class Decoder(_Layers):
  """1x1xN code -> 4x4x(8*width) -> 4x4 stride-2 up-convs with BN + ReLU -> (hole, hole, 3), tanh.

  `skips` maps a side length to features of the patch box at that resolution; each level whose
  side is in it concatenates them before its up-convolution.
  """

  width: int = 64
  hole_size: int = 64
  upsample: str = 'deconv'
  residual: bool = False  # last layer linear and zero at init (no tanh): paints a correction

  def up(self, features, bias, kernel_init=weight_init):
    """x2 up-sampling: the original's 4x4 stride-2 transposed conv ('deconv'), or a nearest
    ('nearest') or bilinear ('bilinear') resize then a 3x3 conv, which paint no checkerboard."""
    if self.upsample in ('deconv', 'nearest'):
      layer = stride2_conv.UpConv if self.upsample == 'deconv' else stride2_conv.NearestUpConv
      return layer(
          features, use_bias=bias, impl=self.conv_impl, dtype=self.dtype, kernel_init=kernel_init
      )
    conv = nn.Conv(
        features, (3, 3), padding='SAME', use_bias=bias, kernel_init=kernel_init, dtype=self.dtype
    )
    return lambda x: conv(upsample2_bilinear(x))

  @nn.compact
  def __call__(self, z, skips=None):
    top = 8 * self.width
    x = nn.Dense(16 * top, use_bias=False, kernel_init=weight_init, dtype=self.dtype)(z)
    x = nn.relu(self.norm()(x.reshape(-1, 4, 4, top)))
    n = _log2(self.hole_size, 'hole_size') - 2
    for i in range(n):
      last = i == n - 1
      if skips and x.shape[1] in skips:
        x = jnp.concatenate([x, skips[x.shape[1]].astype(x.dtype)], axis=-1)
      if last and self.residual:
        x = self.up(3, True, kernel_init=nn.initializers.zeros)(x)
      else:
        c = 3 if last else max(self.width, top // 2 ** (i + 1))
        x = self.conv_block(x, self.up, c, norm=not last, act=jnp.tanh if last else nn.relu)
    return x.astype(jnp.float32)


def box_features(stages, corner, image_size: int, hole_size: int) -> dict:
  """{side: (B, side, side, C)} crops of the encoder's maps over the patch box, one per decoder
  level below the patch's own resolution whose matching map exists (side = map size x
  hole_size / image_size). `corner` (B, 2) is the patch box's top-left corner in image pixels."""
  out = {}
  for f in stages:
    size = f.shape[1]
    side = size * hole_size // image_size
    if side < 4 or side >= hole_size or side * image_size != size * hole_size:
      continue
    out[side] = jax.vmap(
        lambda m, c, side=side: jax.lax.dynamic_slice(m, (c[0], c[1], 0), (side, side, m.shape[-1]))
    )(f, corner * size // image_size)
  return out


class Generator(_Layers):
  """The context encoder's generator: masked image -> encoder -> bottleneck -> decoder -> patch.

  model='gan': the bottleneck is Dense + BN + LeakyReLU to N (the original's 4x4 valid conv).
  model='vae': two Dense heads give mu and log-variance; z = mu + sigma * eps with eps drawn from
  `key` (one key, or one per example: then an example's noise does not depend on how the batch
  is split across devices), or z = mu when no key is given (deterministic evaluation).
  skips=True adds the encoder's features over the patch box to the decoder (`box_features`);
  `corner` (B, 2) is the patch box's top-left corner, the centre when None.
  residual=True paints a correction on the input's own patch (the hole pre-filled, e.g. by the
  harmonic fill: `config.prefill`) in the frame of the image's statistics: the encoder sees
  (x - mean) / std of the image (mean per channel, one std, at least `MIN_STD`) beside the
  `mask` (B, H, W, 1), and the patch is x's patch + std * decoder output, whose last layer
  starts at zero. So a dark, grey or low-contrast photo looks to the network like any other,
  and training starts from the pre-fill instead of from noise.
  Returns (patch, extras) with extras = {'mu', 'logvar'} for the VAE and {} for the GAN.
  """

  model: str = 'gan'
  encoder: str = 'pathak'
  bottleneck: int = 4000
  width: int = 64
  hole_size: int = 64
  skips: bool = False
  upsample: str = 'deconv'
  residual: bool = False

  @nn.compact
  def __call__(self, x, key=None, corner=None, mask=None):
    common = dict(
        train=self.train, axis_name=self.axis_name, dtype=self.dtype, conv_impl=self.conv_impl
    )
    size = x.shape[1]
    if corner is None:
      corner = jnp.broadcast_to(
          jnp.asarray(masks.center_corner(size, self.hole_size)), (x.shape[0], 2)
      )
    corner = jnp.asarray(corner, jnp.int32)
    prefilled = x
    if self.residual:
      mean = jnp.mean(x, axis=(1, 2), keepdims=True)
      std = jnp.maximum(jnp.std(x, axis=(1, 2, 3), keepdims=True), MIN_STD)
      if mask is None:
        raise ValueError('A residual generator needs the mask (B, H, W, 1) of the hole.')
      x = jnp.concatenate([(x - mean) / std, jnp.asarray(mask, x.dtype)], axis=-1)
    stages = ENCODER_CLASSES[self.encoder](width=self.width, name='encoder', **common)(x)
    skips = None
    if self.skips:
      skips = box_features(stages, corner, size, self.hole_size)
    h = stages[-1].reshape(x.shape[0], -1)
    dense = functools.partial(nn.Dense, self.bottleneck, kernel_init=weight_init, dtype=self.dtype)
    extras = {}
    if self.model == 'gan':
      z = lrelu(self.norm(name='bottleneck_bn')(dense(use_bias=False, name='bottleneck')(h)))
    else:
      mu = dense(name='mu')(h).astype(jnp.float32)
      logvar = dense(name='logvar')(h).astype(jnp.float32)
      z = mu
      if key is not None:
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
          key = jax.random.wrap_key_data(key)  # raw uint32 keys
        if key.ndim == 0:
          eps = jax.random.normal(key, mu.shape, mu.dtype)
        else:
          eps = jax.vmap(lambda k: jax.random.normal(k, mu.shape[1:], mu.dtype))(key)
        z = mu + jnp.exp(0.5 * logvar) * eps
      extras = {'mu': mu, 'logvar': logvar}
    patch = Decoder(
        width=self.width,
        hole_size=self.hole_size,
        upsample=self.upsample,
        residual=self.residual,
        name='decoder',
        **common,
    )(z, skips)
    if self.residual:
      patch = jnp.clip(masks.crop(prefilled, corner, self.hole_size) + std * patch, -1.0, 1.0)
    return patch, extras


class Discriminator(_Layers):
  """DCGAN discriminator on the patch: 4x4 stride-2 convs (BN on all but the first), one logit."""

  width: int = 64

  @nn.compact
  def __call__(self, patch):
    x = patch.astype(self.dtype)
    n = _log2(patch.shape[1], 'hole_size') - 2
    for i in range(n):
      x = self.conv_block(x, self.down, self.width * 2 ** min(i, 3), norm=i > 0)
    x = nn.Dense(1, kernel_init=weight_init, dtype=self.dtype)(x.reshape(x.shape[0], -1))
    return x[:, 0].astype(jnp.float32)


def validate(config) -> None:
  """One-line errors for configurations the networks cannot build."""
  if config.model not in MODELS:
    raise ValueError(f'Unknown model {config.model!r}; choose one of: {", ".join(MODELS)}.')
  if config.encoder not in ENCODERS:
    raise ValueError(f'Unknown encoder {config.encoder!r}; choose one of: {", ".join(ENCODERS)}.')
  if config.image_size not in IMAGE_SIZES:
    raise ValueError(
        f'image_size={config.image_size} is not supported; choose one of '
        f'{", ".join(map(str, IMAGE_SIZES))}.'
    )
  _log2(config.hole_size, 'hole_size')
  if not 8 <= config.hole_size <= config.image_size:
    raise ValueError(
        f'hole_size={config.hole_size} must be between 8 and image_size=' f'{config.image_size}.'
    )
  if config.bottleneck < 1:
    raise ValueError(f'bottleneck={config.bottleneck} must be a positive number of units.')
  if config.conv_impl not in stride2_conv.CONV_IMPLS:
    raise ValueError(
        f'conv_impl={config.conv_impl!r}: use one of ' f"{', '.join(stride2_conv.CONV_IMPLS)}."
    )
  if config.upsample not in UPSAMPLES:
    raise ValueError(f"upsample={config.upsample!r}: use one of {', '.join(UPSAMPLES)}.")
  if config.dtype not in ('float32', 'bfloat16'):
    raise ValueError(f"dtype={config.dtype!r}: use 'float32' or 'bfloat16'.")
  if config.prefill not in masks.PREFILLS:
    raise ValueError(f"prefill={config.prefill!r}: use one of {', '.join(masks.PREFILLS)}.")


def describe(config) -> str:
  """What a generator is, in words, for logs, tables and the app ('gan/pathak' says too little
  of a U-Net trained on reconstruction alone)."""
  if config.model == 'vae':
    kind = 'VAE context encoder'
  elif config.loss.adv_weight > 0:
    kind = 'GAN context encoder'
  else:
    kind = 'context encoder (L2 only)'
  parts = [f'{config.encoder} {kind}', f'bottleneck {config.bottleneck}']
  if config.skips:
    parts.append('U-Net skips')
  if config.residual:
    parts.append(f'residual on the {config.prefill} fill')
  return ', '.join(parts) + f', {config.image_size}/{config.hole_size}'


def create(config, *, train: bool = False, axis_name: str | None = None):
  """Returns (generator, discriminator) modules for `config`; the discriminator is None for a VAE.

  train=True makes BatchNorm use (and update) batch statistics; axis_name averages them across
  devices inside `shard_map`.
  """
  validate(config)
  common = dict(
      train=train, axis_name=axis_name, dtype=jnp.dtype(config.dtype), conv_impl=config.conv_impl
  )
  generator = Generator(
      model=config.model,
      encoder=config.encoder,
      bottleneck=config.bottleneck,
      width=config.gen_width,
      hole_size=config.hole_size,
      skips=config.skips,
      upsample=config.upsample,
      residual=config.residual,
      **common,
  )
  discriminator = (
      Discriminator(width=config.disc_width, **common) if config.model == 'gan' else None
  )
  return generator, discriminator
