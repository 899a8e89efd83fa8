"""The report's study scaled to 2 CPU cores: the `cpu` protocol of experiments.sweep.

Every cell of Tables 1-3 (VAE / GAN x AlexNet / VGG / ResNet / Pathak, bottleneck 500 / 2000 /
4000) trains with these settings; only the model, encoder, bottleneck, seed and length change
(experiments/report.py: Tables 1-2 train NUM_STEPS, Table 3 30 % of it, the report's 100:30).
What is scaled, and why each choice keeps the comparison fair (experiments/RESULTS.md):

* 64x64 images with the centre 32x32 patch predicted (overlap 0, as the report): the original
  release's hole-to-image ratio (64/128), a quarter of the 128-px pixels. At 64 px the report's
  ratio (64/256) would leave a 16-px hole, two decoder stages instead of four.
* width 16 for every network alike (generator's first stage and discriminator's first conv, 1/4
  of the report's 64): about 1/16 of the convolutions' FLOPs; the bottleneck sizes stay the
  report's 500 / 2000 / 4000.
* batch 32 as the report; the same steps (so the same images seen) for every cell of a table.
* data: the 1,914-photo training folder (experiments.pretrained.make_training_set), 15 % held
  out by group; the bundled held-out samples are a second test set.

  python -m experiments.pretrained.make_training_set --out=/work/data/ce_train
  python -m ce_jax.train --config=study_cpu --model=vae --encoder=vgg --workdir=/tmp/run
  python -m experiments.sweep --protocol=cpu --table=all --root=/work/runs/study   # the study
"""

from ce_jax.configs import default

DATA = '/work/data/ce_train'
# Tables 1-2's length; Table 3 trains STEPS * 3 // 10 (experiments/report.py).
NUM_STEPS = 1000


def get_config():
  c = default.get_config()
  c.image_size = 64
  c.hole_size = 32
  c.mask.overlap = 0
  c.gen_width = 16
  c.disc_width = 16
  c.batch_size = 32
  c.eval_batch_size = 32
  c.dataset = f'folder:{DATA}'
  c.num_epochs = -1
  c.num_steps = NUM_STEPS
  c.log_every = 100
  c.eval_every = 100_000  # only at the last step (the study scores each run itself)
  c.eval_examples = 64  # that last periodic evaluation: a glance, not the score
  c.checkpoint_every = 250
  c.keep_checkpoints = 1
  c.grid_images = 4
  return c
