"""Command-line flags shared by train / evaluate / bench: a preset plus overrides.

`--config=NAME` picks a preset from ce_jax/configs; the named flags below override its fields
(None = keep the preset's value), and `--set=path.to.field=value` reaches any other field.
"""

import ast

from absl import flags
import ml_collections

from ce_jax import configs

# flag name -> config field path
OVERRIDES = {
    'model': 'model', 'encoder': 'encoder', 'bottleneck': 'bottleneck',
    'image_size': 'image_size', 'hole_size': 'hole_size', 'gen_width': 'gen_width',
    'disc_width': 'disc_width', 'batch_size': 'batch_size', 'eval_batch_size': 'eval_batch_size',
    'num_steps': 'num_steps', 'num_epochs': 'num_epochs', 'learning_rate': 'optim.learning_rate',
    'gen_lr_mult': 'optim.gen_lr_mult', 'rec_weight': 'loss.rec_weight',
    'adv_weight': 'loss.adv_weight', 'kl_weight': 'loss.kl_weight', 'dataset': 'dataset',
    'data_dir': 'data_dir', 'train_examples': 'train_examples', 'test_examples': 'test_examples',
    'seed': 'seed', 'dtype': 'dtype', 'mask': 'mask.kind', 'mask_file': 'mask.file',
    'overlap': 'mask.overlap', 'conv_impl': 'conv_impl', 'log_every': 'log_every',
    'eval_every': 'eval_every', 'checkpoint_every': 'checkpoint_every',
}
_HELP = {
    'model': 'vae | gan', 'encoder': 'pathak | alexnet | vgg | resnet',
    'bottleneck': 'code size N (500 / 2000 / 4000 in the report)',
    'dataset': 'samples | places365_small | folder:PATH', 'dtype': 'float32 | bfloat16 compute',
    'mask': 'center | block | freeform | file',
    'conv_impl': 'phase | xla (4x4 stride-2 convolutions)',
}
_STR_FIELDS = ('model', 'encoder', 'dataset', 'data_dir', 'dtype', 'mask', 'mask_file',
               'conv_impl')
_FLOAT_FIELDS = ('learning_rate', 'gen_lr_mult', 'rec_weight', 'adv_weight', 'kl_weight')


def define_config_flags() -> None:
  """Defines --config, every override flag and --set (call once, at import of a main module)."""
  flags.DEFINE_string('config', 'default', f'Preset: {", ".join(configs.PRESETS)}.')
  for name in OVERRIDES:
    help_ = _HELP.get(name, f'Overrides config.{OVERRIDES[name]}.')
    if name in _STR_FIELDS:
      flags.DEFINE_string(name, None, help_)
    elif name in _FLOAT_FIELDS:
      flags.DEFINE_float(name, None, help_)
    else:
      flags.DEFINE_integer(name, None, help_)
  flags.DEFINE_multi_string('set', [], 'Any other field: --set=optim.b1=0.9 (repeatable).')


def set_field(config: ml_collections.ConfigDict, path: str, value) -> None:
  """Sets config.<path> (dotted), refusing unknown fields in one line."""
  *parents, leaf = path.split('.')
  node = config
  for p in parents:
    node = node.get(p) if isinstance(node, ml_collections.ConfigDict) else None
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ValueError(f'Unknown config field {path!r}; see ce_jax/configs/default.py for the fields.')
  current = node[leaf]
  if isinstance(value, str) and not isinstance(current, str):
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
      raise ValueError(f'Cannot parse {path}={value!r} as a {type(current).__name__}.') from e
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  try:
    node[leaf] = value
  except TypeError:  # ml_collections refuses a value of another type (fill=5 for a tuple)
    raise ValueError(f'{path}={value!r} is not a {type(current).__name__} like its default '
                     f'{current!r}.') from None


def config_from_flags(flag_values=flags.FLAGS) -> ml_collections.ConfigDict:
  """The preset named by --config with every given override applied."""
  config = configs.get(flag_values.config)
  for name, path in OVERRIDES.items():
    value = flag_values[name].value
    if value is not None:
      set_field(config, path, value)
  for item in flag_values.set:
    if '=' not in item:
      raise ValueError(f'--set={item!r} must look like field.path=value.')
    path, value = item.split('=', 1)
    set_field(config, path.strip(), value.strip())
  return config
