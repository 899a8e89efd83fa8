"""Process setup happens in `platform.setup()`, visibly, and never at import."""

import os
import subprocess
import sys

import pytest

from ce_jax import platform
from conftest import REPO


def test_importing_ce_jax_changes_nothing():
  code = (
      'import os; import ce_jax, ce_jax.train, ce_jax.evaluate, ce_jax.inpaint, ce_jax.app; '
      'print(repr(os.environ.get("XLA_FLAGS")))'
  )
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  r = subprocess.run(
      [sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
  )
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == 'None'


@pytest.fixture
def cpu_machine(monkeypatch):
  """A process whose JAX has not started, with jaxlib 0.10 and no TPU runtime."""
  versions = {'jaxlib': '0.10.2', 'libtpu': None}
  monkeypatch.setattr(platform, '_installed', versions.get)
  monkeypatch.setattr(platform, '_backend_started', lambda: False)
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  return versions


def test_setup_prefers_xla_cpu_convolutions_and_says_so(cpu_machine, monkeypatch, capsys):
  monkeypatch.setattr(platform.jax, 'process_index', lambda: 0)
  platform.setup()
  assert os.environ['XLA_FLAGS'] == platform.CPU_CONV_FLAG
  assert capsys.readouterr().err == 'platform: XLA CPU convolutions instead of YNNPACK\n'


@pytest.mark.parametrize('case', ['user_flag', 'unmeasured_jaxlib', 'tpu', 'backend_started'])
def test_setup_leaves_xla_flags_alone(case, cpu_machine, monkeypatch, capsys):
  user = '--xla_cpu_experimental_ynn_fusion_type=' if case == 'user_flag' else ''
  monkeypatch.setenv('XLA_FLAGS', user)
  if case == 'unmeasured_jaxlib':
    cpu_machine['jaxlib'] = '0.9.2'
  if case == 'tpu':
    cpu_machine['libtpu'] = '0.0.20'
  if case == 'backend_started':
    monkeypatch.setattr(platform, '_backend_started', lambda: True)
  platform.setup()
  assert os.environ['XLA_FLAGS'] == user
  assert capsys.readouterr().err == ''
