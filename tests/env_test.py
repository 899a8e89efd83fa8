"""scripts/env.sh keeps an accelerator JAX that the Python making .venv already has."""

import subprocess
import sys

from conftest import REPO


def _detection_code() -> str:
  """The Python that env.sh runs (its heredoc) to decide on --system-site-packages."""
  lines = (REPO / 'scripts' / 'env.sh').read_text().splitlines()
  start = next(i for i, l in enumerate(lines) if l.rstrip().endswith("<<'EOF'"))
  end = next(i for i in range(start + 1, len(lines)) if lines[i] == 'EOF')
  return '\n'.join(lines[start + 1 : end])


def _finds_accelerator(site) -> bool:
  """Whether the detection finds an accelerator JAX with `site` on the path (and this CPU venv)."""
  r = subprocess.run(
      [sys.executable, '-c', _detection_code()],
      env={'PYTHONPATH': str(site)},
      capture_output=True,
      text=True,
      timeout=60,
  )
  assert r.returncode in (0, 1), r.stderr
  return r.returncode == 0


def test_env_sh_sees_an_installed_accelerator_jax(tmp_path):
  for name in ('jax_cuda12_plugin', 'libtpu'):
    site = tmp_path / name
    dist = site / f'{name}-0.10.2.dist-info'
    dist.mkdir(parents=True)
    (dist / 'METADATA').write_text(f'Metadata-Version: 2.1\nName: {name}\nVersion: 0.10.2\n')
    assert _finds_accelerator(site), name
  assert not _finds_accelerator(tmp_path / 'empty')
