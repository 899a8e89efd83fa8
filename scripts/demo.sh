#!/usr/bin/env bash
# The main job: sets up .venv on first use, trains a small GAN context encoder on the bundled
# sample photos (a few minutes on 2 CPU cores; resumes if run again), then scores it against the
# mean-fill and Telea baselines on the held-out samples and writes a PNG of its inpaintings.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
workdir=${WORKDIR:-runs/demo}
python -m ce_jax.train --config=demo --workdir="$workdir" "$@"
python -m ce_jax.evaluate --workdir="$workdir"
