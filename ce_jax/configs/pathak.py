"""The original Context Encoder release (Torch, 2016): 128x128 images, centre 64x64 hole, batch 64.

Generator: pathak encoder, bottleneck 4000, about 71 M parameters; overlap 4 px with 10x L2 weight;
losses 0.999 / 0.001; Adam 2e-4, beta1 0.5; the generator learns 10x faster than the discriminator.

  python -m ce_jax.train --config=pathak --dataset=folder:/path/to/paris_streetview
"""

from ce_jax.configs import default


def get_config():
  c = default.get_config()
  c.optim.gen_lr_mult = 10.0
  return c
