"""From the command line to a config: ml_collections config_flags, as in flax's examples.

  --config=inpaint                        a preset of ce_jax/configs (or any config file's path)
  --config.optim.learning_rate=1e-3       any field: type-checked, unknown fields refused
  --model=vae --encoder=vgg --num_steps=5 short aliases for the fields set most often

`define_config_flags` turns a preset's name into its file, so that `--config=demo` keeps
working, and lets `--config.x=y` come before `--config` on the line; commands pass `parse_flags`
to `app.run` for one-line errors.
"""

import ast
import contextlib
import importlib.util
import re
from pathlib import Path
import sys

from absl import app, flags
import ml_collections
from ml_collections import config_flags

from ce_jax import configs

# alias flag -> config field
ALIASES = {
    'model': 'model',
    'encoder': 'encoder',
    'bottleneck': 'bottleneck',
    'image_size': 'image_size',
    'hole_size': 'hole_size',
    'gen_width': 'gen_width',
    'disc_width': 'disc_width',
    'batch_size': 'batch_size',
    'eval_batch_size': 'eval_batch_size',
    'num_steps': 'num_steps',
    'num_epochs': 'num_epochs',
    'learning_rate': 'optim.learning_rate',
    'gen_lr_mult': 'optim.gen_lr_mult',
    'rec_weight': 'loss.rec_weight',
    'adv_weight': 'loss.adv_weight',
    'kl_weight': 'loss.kl_weight',
    'dataset': 'dataset',
    'data_dir': 'data_dir',
    'train_examples': 'train_examples',
    'test_examples': 'test_examples',
    'seed': 'seed',
    'dtype': 'dtype',
    'mask': 'mask.kind',
    'mask_file': 'mask.file',
    'overlap': 'mask.overlap',
    'conv_impl': 'conv_impl',
    'log_every': 'log_every',
    'eval_every': 'eval_every',
    'checkpoint_every': 'checkpoint_every',
}
_HELP = {
    'model': 'vae | gan',
    'encoder': 'pathak | alexnet | vgg | resnet',
    'bottleneck': 'code size N (500 / 2000 / 4000 in the report)',
    'dataset': 'samples | places365_small | folder:PATH',
    'dtype': 'float32 | bfloat16 compute',
    'mask': 'center | block | freeform | file',
    'conv_impl': 'phase | xla (4x4 stride-2 convolutions)',
}
_DEFINE_BY_TYPE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float}


def preset_path(name: str) -> str:
  """The file of preset `name`: what --config=NAME stands for."""
  if name not in configs.PRESETS:
    raise ValueError(
        f'Unknown config preset {name!r}; choose one of: {", ".join(configs.PRESETS)}'
        " or give a config file's path."
    )
  return str(Path(configs.__file__).parent / f'{name}.py')


def field(config: ml_collections.ConfigDict, path: str):
  """config.<path> (dotted)."""
  for part in path.split('.'):
    config = config[part]
  return config


def define_config_flags(default: str = 'default', *, aliases=tuple(ALIASES)) -> None:
  """--config (a preset or file), its --config.field overrides, and the named aliases.

  config_flags reads sys.argv itself, and parses the default config with the overrides already
  here: sys.argv gets the preset's file for --config=NAME first, and errors come as one line.
  """
  with _one_line_errors(sys.argv):
    sys.argv = expand_presets(sys.argv, preset_path(default))
    config_flags.DEFINE_config_file(
        'config',
        preset_path(default),
        f'Preset ({", ".join(configs.PRESETS)}) or a config file with get_config(); override '
        'any field with --config.field=value.',
    )
  define_alias_flags(aliases)


def define_field_flags(help_: str) -> None:
  """--config.field=value alone, for commands whose config comes from elsewhere (evaluate: the
  checkpoint's; the sweep: each cell's); read them with `overrides()`."""
  with _one_line_errors(sys.argv):
    config_flags.DEFINE_config_dict('config', configs.get('default'), help_)


def define_alias_flags(aliases=tuple(ALIASES)) -> None:
  """Short flags for config fields, typed like the fields' defaults (None = not given)."""
  defaults = configs.get('default')
  for name in aliases:
    path = ALIASES[name]
    kind = type(field(defaults, path))
    _DEFINE_BY_TYPE[kind](name, None, _HELP.get(name, f'Same as --config.{path}.'))


def expand_presets(argv: list[str], default_file: str) -> list[str]:
  """argv with --config=NAME spelled as the preset's file and first, before its overrides."""
  args, given, rest = [], [], iter(argv[1:])
  for arg in rest:
    if arg.startswith('--config='):
      given.append(arg[len('--config=') :])
    elif arg == '--config':  # --config NAME, the space-separated form
      given.append(next(rest, ''))
    else:
      args.append(arg)
  value = given[-1] if given else default_file
  if value in configs.PRESETS:
    value = preset_path(value)
  elif not Path(value.split(':')[0]).expanduser().is_file():
    raise ValueError(
        f'--config={value}: no such preset ({", ".join(configs.PRESETS)}) or config file.'
    )
  elif value != default_file:
    check_config_file(value)
  return argv[:1] + [f'--config={value}'] + args


def _leaves(config, prefix: str = '') -> set[str]:
  """The dotted paths of a ConfigDict's fields."""
  paths = set()
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      paths |= _leaves(value, f'{prefix}{key}.')
    else:
      paths.add(prefix + key)
  return paths


def check_config_file(value: str) -> None:
  """Loads a user's config file (`path` or `path:arg`, as config_flags does) once, to turn what
  can go wrong in it into one line: a syntax error, no get_config(), a get_config() that raises,
  returns no ConfigDict or lacks fields."""
  path, _, arg = value.partition(':')
  path = str(Path(path).expanduser())
  spec = importlib.util.spec_from_file_location('_ce_jax_user_config', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ValueError(f'--config={path}: syntax error at line {e.lineno}: {e.msg}.') from None
  except Exception as e:  # pylint: disable=broad-except  # whatever the user's file raises
    raise ValueError(f'--config={path} cannot be loaded: {_error_line(e)}.') from None
  if not callable(getattr(module, 'get_config', None)):
    raise ValueError(f'--config={path} defines no get_config(); see ce_jax/configs/tiny.py.')
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'--config={path}: get_config() raised {_error_line(e)}.') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(
        f'--config={path}: get_config() returned a {type(config).__name__}, not an '
        'ml_collections.ConfigDict; start from ce_jax.configs.default.get_config() as '
        'ce_jax/configs/tiny.py does.'
    )
  missing = sorted(_leaves(configs.get('default')) - _leaves(config))
  if missing:
    raise ValueError(
        f'--config={path}: its config lacks {", ".join(missing[:5])}'
        f'{", ..." if len(missing) > 5 else ""}; start from ce_jax.configs.default.get_config() '
        'as ce_jax/configs/tiny.py does.'
    )


def _error_line(e: Exception) -> str:
  text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ''
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


@contextlib.contextmanager
def _one_line_errors(argv: list[str]):
  """A wrong --config or --config.field ends the command with one line, not a traceback."""
  command = Path(argv[0]).stem
  try:
    yield
  except ValueError as e:
    sys.exit(f'{command}: {e}')
  except (AttributeError, KeyError) as e:  # config_flags on a field the config does not have
    typo = re.search(r'"(\w+)" instead of "(\w+)"', str(e))
    given = [a.split('=')[0] for a in argv if a.startswith('--config.')]
    if typo:
      given = [a for a in given if a.endswith('.' + typo[2])] or given
    hint = f' (did you mean {typo[1]!r}?)' if typo else ''
    sys.exit(
        f'{command}: unknown config field in {" ".join(given)}{hint}; see '
        'ce_jax/configs/default.py for the fields.'
    )


def parse_flags(argv: list[str]) -> list[str]:
  """app.run's flags_parser for commands with --config: one-line errors."""
  with _one_line_errors(argv):
    rest = app.parse_flags_with_usage(argv)
    overrides()  # an alias and its --config.field both given
    return rest


def set_field(config: ml_collections.ConfigDict, path: str, value) -> None:
  """Sets config.<path>, parsing a string for a non-string field; one-line errors."""
  *parents, leaf = path.split('.')
  node = config
  for p in parents:
    node = node.get(p) if isinstance(node, ml_collections.ConfigDict) else None
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ValueError(
        f'Unknown config field {path!r}; see ce_jax/configs/default.py for the fields.'
    )
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
    raise ValueError(
        f'{path}={value!r} is not a {type(current).__name__} like its default ' f'{current!r}.'
    ) from None


def overrides(flag_values=flags.FLAGS) -> dict:
  """{field path: value} the command line gave: --config.x=y and the aliases that are defined."""
  given = dict(config_flags.get_override_values(flag_values['config']))
  for name, path in ALIASES.items():
    if name in flag_values and flag_values[name].present:
      if path in given:
        raise ValueError(f'--{name} and --config.{path} both set config.{path}; give one.')
      given[path] = flag_values[name].value
  return given


def apply_overrides(config: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with `values` ({field path: value}) set."""
  config = ml_collections.ConfigDict(config.to_dict())
  for path, value in values.items():
    set_field(config, path, value)
  return config


def config_from_flags(flag_values=flags.FLAGS) -> ml_collections.ConfigDict:
  """The config named by --config with the aliases applied (its --config.x are applied already)."""
  aliases = {
      k: v
      for k, v in overrides(flag_values).items()
      if k not in config_flags.get_override_values(flag_values['config'])
  }
  return apply_overrides(flag_values.config, aliases)
