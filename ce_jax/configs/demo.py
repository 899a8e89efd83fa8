"""The README's demo: a small GAN context encoder that learns on the bundled photos in a few
minutes on 2 CPU cores, then shows its inpaintings.

  python -m ce_jax.train --config=demo
"""

from ce_jax.configs import default


def get_config():
  c = default.get_config()
  c.image_size = 64
  c.hole_size = 32
  c.gen_width = 32
  c.disc_width = 32
  c.bottleneck = 512
  c.mask.overlap = 2
  c.batch_size = 32
  c.eval_batch_size = 32
  c.num_epochs = -1
  c.num_steps = 1500
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  return c
