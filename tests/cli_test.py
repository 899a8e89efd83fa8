"""From the command line to a config: presets, --config files, --config.field, aliases, errors."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ce_jax import cli
from conftest import REPO

# Defines the flags as train does, parses argv, prints the resulting config as JSON.
PRINT_CONFIG = textwrap.dedent("""
    import sys
    from absl import app
    from ce_jax import cli
    cli.define_config_flags()
    def main(argv):
      print(cli.config_from_flags().to_json())
    app.run(main, flags_parser=cli.parse_flags)
""")


def config_for(*args, cwd=REPO):
  r = subprocess.run(
      [sys.executable, '-c', PRINT_CONFIG, *args],
      cwd=cwd,
      capture_output=True,
      text=True,
      timeout=60,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
  )
  return r, (json.loads(r.stdout) if r.returncode == 0 else None)


def test_preset_fields_and_aliases_in_any_order():
  r, c = config_for(
      '--config.optim.b1=0.9',
      '--config=tiny',
      '--model=vae',
      '--config.mask.kind=freeform',
      '--learning_rate=1e-3',
  )
  assert r.returncode == 0, r.stderr
  assert (c['image_size'], c['model'], c['mask']['kind']) == (32, 'vae', 'freeform')
  assert (c['optim']['b1'], c['optim']['learning_rate']) == (0.9, 1e-3)


def test_default_preset_and_own_config_file(tmp_path):
  _, c = config_for()
  assert (c['image_size'], c['encoder']) == (128, 'pathak')
  own = tmp_path / 'mine.py'
  own.write_text(
      'from ce_jax.configs import tiny\n\ndef get_config():\n'
      '  c = tiny.get_config()\n  c.bottleneck = 7\n  return c\n'
  )
  r, c = config_for(f'--config={own}', '--config.seed=3')
  assert r.returncode == 0, r.stderr
  assert (c['bottleneck'], c['seed'], c['image_size']) == (7, 3, 32)


@pytest.mark.parametrize(
    'args, message',
    [
        (
            ['--config=tiny', '--config.optim.bb1=2'],
            "-c: unknown config field in --config.optim.bb1 (did you mean 'b1'?)",
        ),
        (
            ['--config=nope'],
            '-c: --config=nope: no such preset (default, pathak, paper, tiny, demo,',
        ),
        (['--model=vae', '--config.model=gan'], '-c: --model and --config.model both set'),
    ],
)
def test_wrong_flags_fail_in_one_line(args, message):
  r, _ = config_for(*args)
  assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr
  assert r.stderr.strip().splitlines()[-1].startswith(message), r.stderr


def test_expand_presets_puts_the_config_first():
  default = cli.preset_path('default')
  assert cli.expand_presets(['x', '--config.seed=1', '--config=demo'], default) == [
      'x',
      f'--config={cli.preset_path("demo")}',
      '--config.seed=1',
  ]
  assert cli.expand_presets(['x', '--seed=1'], default) == ['x', f'--config={default}', '--seed=1']
  assert cli.expand_presets(['x', '--config', 'tiny', '--seed=1'], default) == [
      'x',
      f'--config={cli.preset_path("tiny")}',
      '--seed=1',
  ]
