"""A tiny network for tests and quick CPU checks: 32x32 images, 16x16 hole, narrow layers.

python -m ce_jax.train --config=tiny --num_steps=200
"""

from ce_jax.configs import default


def get_config():
  c = default.get_config()
  c.image_size = 32
  c.hole_size = 16
  c.gen_width = 8
  c.disc_width = 8
  c.bottleneck = 64
  c.mask.overlap = 2
  c.batch_size = 16
  c.eval_batch_size = 16
  c.num_epochs = -1
  c.num_steps = 100
  c.log_every = 10
  c.eval_every = 50
  c.checkpoint_every = 50
  c.grid_images = 4
  return c
