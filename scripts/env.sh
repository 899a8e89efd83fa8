# Sourced by the other scripts: create (or reuse) .venv and install ce_jax with its test extras.
# Re-installs only when pyproject.toml or CE_JAX_EXTRAS changes, so repeated runs start in seconds.
#
#   CE_JAX_EXTRAS=cuda12 bash scripts/demo.sh     # also install JAX for CUDA 12 (or cuda13, tpu)
#
# Where the Python that makes .venv already has an accelerator JAX (a JAX GPU container, a TPU
# VM), .venv sees its packages and keeps that JAX instead of installing a CPU one over it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
EXTRAS="test${CE_JAX_EXTRAS:+,$CE_JAX_EXTRAS}"
if [ ! -x .venv/bin/python ]; then
  if "$PY" - <<'EOF'
import importlib.metadata, sys
accelerator = {'jax-cuda12-plugin', 'jax-cuda13-plugin', 'libtpu'}
names = {(d.metadata['Name'] or '').lower().replace('_', '-') for d in importlib.metadata.distributions()}
sys.exit(0 if names & accelerator else 1)
EOF
  then
    echo "env.sh: $PY has an accelerator JAX; .venv keeps it (--system-site-packages)" >&2
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
stamp=.venv/.ce_jax-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$EXTRAS" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
  echo "$EXTRAS" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
# TensorFlow only feeds tf.data here: keep its logging quiet.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
