"""ce_jax: Context Encoders for image inpainting in JAX/Flax.

Importing it changes nothing process-wide: commands call `ce_jax.platform.setup()` first.
"""

__version__ = '0.2.0'
