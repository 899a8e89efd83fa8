"""The report's protocol: Places365 at 256x256 with the centre 64x64 missing, batch 32, bottleneck 4000.

5000 training and 2000 test images, 100 epochs (30 for the bottleneck study of Table 3). The report
predicts the whole 64x64 hole, so the overlap is 0 and the report loss is the squared error summed
over the 64x64x3 hole in [-1, 1].

  python -m ce_jax.train --config=paper --model=vae --encoder=vgg --data_dir=~/tensorflow_datasets
"""

from ce_jax.configs import default


def get_config():
  c = default.get_config()
  c.image_size = 256
  c.hole_size = 64
  c.mask.overlap = 0
  c.batch_size = 32
  c.eval_batch_size = 32
  c.dataset = 'places365_small'
  c.train_examples = 5000
  c.test_examples = 2000
  c.num_epochs = 100
  c.eval_every = 1570  # 10 epochs of 157 steps
  c.checkpoint_every = 1570
  return c
