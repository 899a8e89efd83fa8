"""Default configuration: the original Context Encoder (Pathak et al., 2016) on the bundled samples.

Every preset starts from this one and overrides a few fields, as the Flax ImageNet example does.

  python -m ce_jax.train --config=default
"""

import ml_collections

# The original release fills the hole with the ImageNet mean colour (117, 104, 123) scaled to [-1, 1].
PATHAK_FILL = (2 * 117 / 255 - 1, 2 * 104 / 255 - 1, 2 * 123 / 255 - 1)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  # Model.
  c.model = 'gan'  # vae | gan
  c.encoder = 'pathak'  # pathak | alexnet | vgg | resnet
  c.bottleneck = 4000  # N of the 1x1xN code (500 / 2000 / 4000 in the report)
  c.image_size = 128  # 32, 64, 128 or 256
  c.hole_size = 64  # side of the predicted patch; power of two, >= 8, <= image_size
  c.gen_width = 64  # channels of the first encoder stage; the encoder ends at 8x this
  c.disc_width = 64  # channels of the discriminator's first conv
  # U-Net skips: the decoder also sees the encoder's features over the patch box (not in the
  # 2016 release; the `inpaint` preset and the shipped model use them: they remove the seams).
  c.skips = False
  # Decoder up-sampling: 'deconv' (the original's 4x4 stride-2 transposed convs) or 'bilinear'
  # (resize, then 3x3 conv: no checkerboard).
  c.upsample = 'deconv'
  c.conv_impl = 'phase'  # 4x4 stride-2 (up-)convs: 'phase' (fast on CPU) or 'xla'; same params
  c.dtype = 'float32'  # compute dtype: float32 or bfloat16 (parameters stay float32)

  # Masks: where the hole is and what fills it before the encoder sees the image.
  c.mask = ml_collections.ConfigDict()
  c.mask.kind = 'center'  # center | block | freeform | file
  c.mask.overlap = 4  # the filled hole is the patch shrunk by this many pixels on each side
  c.mask.file = ''  # a mask image (white = hole) for kind=file
  c.mask.max_strokes = 4  # freeform: strokes per mask, 1..max_strokes
  c.mask.max_vertices = 5  # freeform: vertices per stroke
  c.mask.max_radius = 0.12  # freeform: stroke radius as a fraction of hole_size
  c.fill = PATHAK_FILL  # per-channel value written into the hole, in [-1, 1]
  # What the encoder sees in the hole: 'constant' (`fill`, the original) or 'harmonic' (the
  # harmonic fill of the context: Laplace's equation with the context as boundary).
  c.prefill = 'constant'
  # residual=True: the generator paints a correction on its input's patch, in the frame of the
  # image's own mean and std, and sees the mask as a 4th channel (models.Generator).
  c.residual = False

  # Losses.
  c.loss = ml_collections.ConfigDict()
  c.loss.rec_weight = 0.999  # lambda_rec
  c.loss.adv_weight = 0.001  # lambda_adv (GAN only)
  c.loss.overlap_weight = 10.0  # L2 weight of the patch pixels within `mask.overlap` of the hole
  c.loss.kl_weight = 1.0  # VAE: weight of KL(q(z|x) || N(0, I)) against the summed squared error

  # Optimisation (Adam as in DCGAN / the original release).
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 2e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim.gen_lr_mult = 1.0  # generator learning rate = learning_rate * gen_lr_mult
  c.optim.grad_clip = 0.0  # global-norm clipping; 0 disables
  # 'constant' (the original) or 'cosine': linear warm-up over warmup_steps, then cosine decay
  # to zero at num_steps (which must then be set).
  c.optim.schedule = 'constant'
  c.optim.warmup_steps = 0
  # Evaluate and ship an exponential moving average of the generator's weights (0 = off).
  c.optim.ema_decay = 0.0

  # Data.
  c.dataset = 'samples'  # samples | places365_small | folder:PATH
  c.data_dir = ''  # TFDS data_dir ('' = TFDS default)
  c.train_examples = -1  # use at most this many training images (-1 = all); 5000 in the report
  c.test_examples = -1  # and this many test images; 2000 in the report
  c.folder_test_fraction = 0.15  # share of a folder's images held out (by a hash of the path)
  # Training crops: 0 rescales the shorter side to 1-9/8 x image_size and crops at random; a
  # fraction f > 0 crops a random window of f..1 x the shorter side instead (zoom augmentation,
  # for small datasets).
  c.train_crop_min = 0.0
  # Share of training images whose brightness, contrast, gamma and saturation are changed at
  # random (some made grey or dark): fills that follow the context's light (augment.py).
  c.photometric = 0.0
  c.batch_size = 64  # global batch, split across all devices
  c.eval_batch_size = 64
  c.shuffle_buffer = 2048

  # Schedule: num_steps wins over num_epochs when positive.
  c.num_epochs = 25
  c.num_steps = -1
  c.seed = 0

  # Logging, evaluation and checkpoints (in steps).
  c.log_every = 50
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.eval_examples = -1  # cap on images per periodic evaluation (-1 = the whole test split)
  c.grid_images = 8  # rows of the original | masked | filled PNG grid

  return c
