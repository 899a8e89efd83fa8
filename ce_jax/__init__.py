"""ce_jax: Context Encoders for image inpainting in JAX/Flax."""

import importlib.metadata
import os

__version__ = '0.1.0'

# XLA's CPU backend hands convolutions to YNNPACK by default, which runs this project's
# convolutions up to 2.8x slower than XLA's own (BENCHMARKS.md): keep YNNPACK for the rest.
# Set only where it was measured (jaxlib 0.10, no TPU runtime: an unknown flag aborts XLA), and
# never over the user's own choice. Takes effect if ce_jax is imported before JAX starts a backend.
CPU_CONV_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def _installed(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _prefer_xla_cpu_convolutions() -> None:
  flags = os.environ.get('XLA_FLAGS', '')
  jaxlib = _installed('jaxlib') or ''
  if 'ynn_fusion_type' not in flags and jaxlib.startswith('0.10.') and not _installed('libtpu'):
    os.environ['XLA_FLAGS'] = f'{flags} {CPU_CONV_FLAG}'.strip()


_prefer_xla_cpu_convolutions()
