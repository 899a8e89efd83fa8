"""The README's demo: a small GAN context encoder that learns on the bundled photos in a few
minutes on 2 CPU cores, then shows its inpaintings.

It uses the shipped recipe's U-Net decoder with bilinear up-sampling + 3x3 convs (no
checkerboard; nearest up-sampling painted 4 px blocks here under the adversarial term) and
paints a residual on the harmonic fill, so in a minute of training on 40 photos it starts
from, and stays close to, the classical fill instead of painting colour noise.

  python -m ce_jax.train --config=demo
"""

from ce_jax.configs import default


def get_config():
  c = default.get_config()
  c.image_size = 64
  c.hole_size = 32
  c.gen_width = 16
  c.disc_width = 16
  c.bottleneck = 256
  c.skips = True
  c.upsample = 'bilinear'
  c.prefill = 'harmonic'
  c.residual = True
  c.mask.overlap = 2
  c.train_crop_min = 0.4  # 40 photos: zoomed random crops multiply the contexts the model sees
  c.batch_size = 32
  c.eval_batch_size = 32
  c.num_epochs = -1
  # 40 training photos: past ~600 steps the model starts to memorise them (test loss rises).
  c.num_steps = 600
  c.log_every = 50
  c.eval_every = 200
  c.checkpoint_every = 200
  return c
