"""The recipe of the shipped pretrained model: the original geometry (128x128 images, centre
64x64 patch, 4 px overlap), a U-Net context encoder trained on reconstruction alone.

Where it differs from the 2016 release, and why (ablations: experiments/pretrained/README.md):
* skips=True: the decoder also sees the encoder's features over the patch box; the 1x1 code
  alone paints seams at the hole's border.
* upsample='nearest': nearest x2 up-sampling then a 3x3 conv in the decoder (computed as a tied
  transposed conv, at its cost), instead of the transposed convs whose uneven overlap paints a
  fine grid.
* width 32, bottleneck 1000: 9.5 M parameters (the original has 71 M), small enough to ship
  (17.5 MB in float16) and to train on a CPU.
* prefill='harmonic', residual=True: the encoder sees the hole pre-filled by the harmonic fill
  (the classical fill it has to beat), normalised by the image's own mean and std, with the
  mask as a 4th channel; the decoder paints a correction on the harmonic patch (last layer
  zero at init), so training starts where the classical fill ends, and a dark or grey photo
  looks to the network like any other.
* photometric=0.5: half the training crops get a random gamma, contrast, saturation and
  brightness (some dark, some grey).
* adv_weight=0: masked L2 alone (the adversarial term trades PSNR for sharpness; the
  discriminator is then skipped, which halves the step).
* Adam beta1 0.9, a warm-up and cosine decay of the learning rate, an EMA of the weights for
  evaluation, and zoomed random crops (0.6..1 of the shorter side) with flips.

  python -m experiments.pretrained.make_training_set --out=DATA
  python -m ce_jax.train --config=inpaint --dataset=folder:DATA --workdir=WORKDIR
  python -m ce_jax.export --workdir=WORKDIR --out=ce_jax/pretrained

Expected (the shipped model, 65 minutes on 2 CPU cores): 17.07 dB PSNR over the hole on the 293
held-out photos, against 15.59 for OpenCV's Telea (ce_jax/pretrained/MODEL_CARD.md).
"""

from ce_jax.configs import default


def get_config():
  c = default.get_config()
  c.skips = True
  c.upsample = 'nearest'
  c.gen_width = 32
  c.bottleneck = 1000
  c.prefill = 'harmonic'
  c.residual = True
  c.photometric = 0.5
  c.loss.adv_weight = 0.0
  c.loss.rec_weight = 1.0
  c.optim.learning_rate = 5e-4
  c.optim.b1 = 0.9
  c.optim.schedule = 'cosine'
  c.optim.warmup_steps = 200
  c.optim.ema_decay = 0.999
  c.train_crop_min = 0.6
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_epochs = -1
  c.num_steps = 12000
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  return c
