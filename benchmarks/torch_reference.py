"""PyTorch CPU reference for the context-encoder GAN train step, to compare ce_jax against.

What it measures: images/s and ms per step of one full training step of Pathak et al.'s
context encoder (the original Torch release's `pathak` encoder: 128x128 input, 64x64 centre hole,
bottleneck N=4000, batch 64, float32, NCHW), written here in plain PyTorch in the standard DCGAN
order:

  fake = G(masked images)
  D step: BCE(D(real), 1) + BCE(D(fake.detach()), 0); Adam(lr 2e-4, betas (0.5, 0.999))
  G step: 0.999 * MSE(fake, real) + 0.001 * BCE(D(fake), 1) (D re-run with its updated
          weights); Adam(lr 2e-3, betas (0.5, 0.999))

Both networks are in train mode (batch statistics in every BatchNorm). One fixed random batch is
made before timing, so the input pipeline is not measured, as in `python -m ce_jax.bench`.
The script also prints the generator's parameter count: 71,124,611 at --image_size=128, the same
as ce_jax's `pathak` generator.

torch is NOT a dependency of ce_jax; install it in a virtualenv of its own, e.g.

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install 'torch==2.13.0+cpu' numpy

(the CPU-only wheel, found here through pip's configured local wheel folder; where it is not
offered, plain `pip install torch==2.13.0` from PyPI should also run this on the CPU; it pulls in
large CUDA packages, and it was not tried here)

then, from the repository root:

  /tmp/torchvenv/bin/python benchmarks/torch_reference.py                   # batch 64, all cores
  /tmp/torchvenv/bin/python benchmarks/torch_reference.py --channels_last   # try NHWC kernels
  /tmp/torchvenv/bin/python benchmarks/torch_reference.py --batch_size=4 --steps=1 --warmup=1  # smoke

Compare with the ce_jax figure from
`python -m ce_jax.bench --config=default --models=gan --encoders=pathak --steps=3 --pipeline_batches=0`
on the same machine, with nothing else running.
"""

import argparse
import os
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F

EXPECTED_GENERATOR_PARAMS_128 = 71_124_611


def conv_down(cin, cout, bn):
  """4x4 stride-2 convolution (halves H and W), optional BatchNorm, LeakyReLU(0.2)."""
  layers = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not bn)]
  if bn:
    layers.append(nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))
  layers.append(nn.LeakyReLU(0.2, inplace=True))
  return layers


def conv_up(cin, cout):
  """4x4 stride-2 transposed convolution (doubles H and W), BatchNorm, ReLU."""
  return [
      nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
      nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
      nn.ReLU(inplace=True),
  ]


class Generator(nn.Module):
  """Encoder (5 strided convs) -> fully connected bottleneck -> decoder (4 up-convs) -> hole."""

  def __init__(self, image_size=128, bottleneck=4000, nc=3, nef=64, ngf=64):
    super().__init__()
    self.s = image_size // 32  # encoder output side == decoder input side (4 at 128px)
    self.c = ngf * 8
    enc_out = nef * 8 * self.s * self.s  # 8192 at 128px
    self.encoder = nn.Sequential(
        *conv_down(nc, nef, bn=False),
        *conv_down(nef, nef, bn=True),
        *conv_down(nef, nef * 2, bn=True),
        *conv_down(nef * 2, nef * 4, bn=True),
        *conv_down(nef * 4, nef * 8, bn=True),
        nn.Flatten(),
        nn.Linear(enc_out, bottleneck, bias=False),
        nn.BatchNorm1d(bottleneck, eps=1e-5, momentum=0.1),
        nn.LeakyReLU(0.2, inplace=True),
    )
    self.fc = nn.Linear(bottleneck, self.c * self.s * self.s, bias=False)
    self.decoder = nn.Sequential(
        nn.BatchNorm2d(self.c, eps=1e-5, momentum=0.1),
        nn.ReLU(inplace=True),
        *conv_up(ngf * 8, ngf * 4),
        *conv_up(ngf * 4, ngf * 2),
        *conv_up(ngf * 2, ngf),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=True),
        nn.Tanh(),
    )
    self.memory_format = torch.contiguous_format

  def forward(self, x):
    z = self.fc(self.encoder(x))
    z = z.view(-1, self.c, self.s, self.s).contiguous(memory_format=self.memory_format)
    return self.decoder(z)


class Discriminator(nn.Module):
  """Four strided convs on the hole-sized patch, then one linear logit."""

  def __init__(self, patch_size=64, nc=3, ndf=64):
    super().__init__()
    s = patch_size // 16
    self.net = nn.Sequential(
        *conv_down(nc, ndf, bn=False),
        *conv_down(ndf, ndf * 2, bn=True),
        *conv_down(ndf * 2, ndf * 4, bn=True),
        *conv_down(ndf * 4, ndf * 8, bn=True),
        nn.Flatten(),
        nn.Linear(ndf * 8 * s * s, 1),
    )

  def forward(self, x):
    return self.net(x).view(-1)


def init_weights(module):
  """DCGAN init: conv/linear weights N(0, 0.02), BatchNorm weights N(1, 0.02), all biases 0."""
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
      nn.init.normal_(m.weight, 1.0, 0.02)
      nn.init.zeros_(m.bias)


def count_params(module):
  return sum(p.numel() for p in module.parameters())


def make_batch(batch_size, image_size, memory_format):
  """Random images in [-1, 1]; input with the centre hole zeroed; the centre crop as target."""
  hole = image_size // 2
  lo, hi = (image_size - hole) // 2, (image_size - hole) // 2 + hole
  images = torch.rand(batch_size, 3, image_size, image_size) * 2 - 1
  real = images[:, :, lo:hi, lo:hi].clone()
  masked = images.clone()
  masked[:, :, lo:hi, lo:hi] = 0
  return (
      masked.contiguous(memory_format=memory_format),
      real.contiguous(memory_format=memory_format),
  )


def train_step(G, D, opt_g, opt_d, masked, real, ones, zeros, wtl2=0.999, wtadv=0.001):
  """One GAN step in the standard PyTorch DCGAN order; returns (loss_D, loss_G) tensors."""
  fake = G(masked)

  # Discriminator: real patches -> 1, generated patches (no gradient into G) -> 0.
  opt_d.zero_grad(set_to_none=True)
  loss_d = F.binary_cross_entropy_with_logits(D(real), ones) + F.binary_cross_entropy_with_logits(
      D(fake.detach()), zeros
  )
  loss_d.backward()
  opt_d.step()

  # Generator: reconstruction + adversarial, D re-run with its updated weights.
  opt_g.zero_grad(set_to_none=True)
  loss_g = wtl2 * F.mse_loss(fake, real) + wtadv * F.binary_cross_entropy_with_logits(D(fake), ones)
  loss_g.backward()
  opt_g.step()
  return loss_d.detach(), loss_g.detach()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--steps', type=int, default=5, help='timed steps')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps first')
  parser.add_argument(
      '--threads',
      type=int,
      default=os.cpu_count(),
      help='torch.set_num_threads (default: os.cpu_count())',
  )
  parser.add_argument(
      '--image_size',
      type=int,
      default=128,
      help='input side; the hole/patch is half of it (multiple of 32)',
  )
  parser.add_argument('--bottleneck', type=int, default=4000)
  parser.add_argument(
      '--channels_last',
      action='store_true',
      help='run the convolutions in torch.channels_last (NHWC) memory format',
  )
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  if args.image_size % 32:
    parser.error('--image_size must be a multiple of 32')
  if args.batch_size < 2:
    parser.error('--batch_size must be at least 2 (BatchNorm1d in train mode)')

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

  G = Generator(args.image_size, args.bottleneck)
  D = Discriminator(args.image_size // 2)
  init_weights(G)
  init_weights(D)
  G.memory_format = memory_format
  G.to(memory_format=memory_format)
  D.to(memory_format=memory_format)
  G.train()
  D.train()
  opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
  opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))

  masked, real = make_batch(args.batch_size, args.image_size, memory_format)
  ones = torch.ones(args.batch_size)
  zeros = torch.zeros(args.batch_size)

  g_params, d_params = count_params(G), count_params(D)
  print(
      f'torch {torch.__version__}, threads {torch.get_num_threads()} '
      f'(os.cpu_count() {os.cpu_count()}), '
      f'memory format {"channels_last" if args.channels_last else "contiguous (NCHW)"}'
  )
  print(
      f'batch {args.batch_size}, image {args.image_size}, hole {args.image_size // 2}, '
      f'bottleneck {args.bottleneck}, float32'
  )
  note = ''
  if args.image_size == 128 and args.bottleneck == 4000:
    ok = g_params == EXPECTED_GENERATOR_PARAMS_128
    note = (
        ' (matches ce_jax)'
        if ok
        else f' (MISMATCH: ce_jax pathak has {EXPECTED_GENERATOR_PARAMS_128:,})'
    )
  print(f'generator parameters {g_params:,}{note}; discriminator parameters {d_params:,}')

  with torch.no_grad():
    fake_shape = tuple(G(masked[:2]).shape)
    logit_shape = tuple(D(real[:2]).shape)
  print(
      f'shapes (G and D checked on 2 images): input {tuple(masked.shape)} -> G {fake_shape} '
      f'(target {tuple(real.shape)}); '
      f'D logits {logit_shape}'
  )
  assert fake_shape[1:] == tuple(real.shape[1:]), (fake_shape, real.shape)

  for _ in range(args.warmup):
    train_step(G, D, opt_g, opt_d, masked, real, ones, zeros)

  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    loss_d, loss_g = train_step(G, D, opt_g, opt_d, masked, real, ones, zeros)
    times.append(time.perf_counter() - start)

  total = sum(times)
  print(f'loss_D {loss_d.item():.4f}, loss_G {loss_g.item():.4f} (after the last step)')
  print(
      f'{args.steps} timed steps after {args.warmup} warm-up: '
      f'{1000 * total / args.steps:.0f} ms/step (median {1000 * statistics.median(times):.0f}, '
      f'min {1000 * min(times):.0f}), '
      f'{args.batch_size * args.steps / total:.1f} images/s'
  )


if __name__ == '__main__':
  main()
