#!/usr/bin/env bash
# The main job: sets up .venv on first use, trains a small GAN context encoder on the bundled
# sample photos (a few minutes on 2 CPU cores; resumes if run again), scores it against the
# mean-fill and Telea baselines on the held-out samples, then shows the pretrained model that
# ships with ce_jax on the same held-out photos at the original 128/64 geometry.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
workdir=${WORKDIR:-runs/demo}
python -m ce_jax.train --config=demo --workdir="$workdir" "$@"
python -m ce_jax.evaluate --workdir="$workdir"
echo
echo "The pretrained model (ce_jax/pretrained/MODEL_CARD.md) on the same held-out photos:"
python -m ce_jax.evaluate --workdir=pretrained --dataset=samples --out="$workdir/pretrained"
