"""Configuration presets, looked up by name (``--config=NAME``)."""

import importlib

import ml_collections

PRESETS = ('default', 'pathak', 'paper', 'tiny', 'demo', 'inpaint', 'study_cpu')


def get(name: str) -> ml_collections.ConfigDict:
  """Returns the preset called `name` (one of PRESETS)."""
  if name not in PRESETS:
    raise ValueError(f'Unknown config preset {name!r}; choose one of: {", ".join(PRESETS)}.')
  return importlib.import_module(f'ce_jax.configs.{name}').get_config()
