"""ce_jax: Context Encoders for image inpainting in JAX/Flax."""

__version__ = '0.1.0'
