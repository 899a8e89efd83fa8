#!/usr/bin/env bash
# The report's study at the cpu protocol (experiments/RESULTS.md), every run in turn, for a
# background job on the 2-core CPU:
#
#   nohup bash experiments/run_cpu_study.sh >> /work/runs/study/driver.log 2>&1 &
#
# One run at a time, niced; a run whose result file exists is skipped, an interrupted one
# resumes from its last checkpoint, so starting it again (in this or a later session) goes on
# where it stopped. Each finished run writes experiments/results/cpu/tableN/CELL-seedK.{json,png}
# and rebuilds RESULTS.md's tables; at the end it draws Figures 4-7 into
# experiments/results/cpu/figures/. It commits nothing: commit those files yourself.
# Environment: STUDY_ROOT (workdirs, default /work/runs/study), STUDY_DATA (the training folder,
# default /work/data/ce_train); extra arguments go to experiments.sweep (e.g. --max_runs=3).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=${STUDY_ROOT:-/work/runs/study}
DATA=${STUDY_DATA:-/work/data/ce_train}
mkdir -p "$ROOT"
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
exec 9>"$ROOT/driver.lock"
if ! flock -n 9; then
  echo "$(date -u +%H:%M) another run_cpu_study.sh holds $ROOT/driver.lock: not starting a second"
  exit 1
fi
if [ ! -f "$DATA/groups.tsv" ]; then
  nice -n 15 python -m experiments.pretrained.make_training_set --out="$DATA" || exit 1
fi
echo "$(date -u '+%F %H:%M UTC') study starts (root $ROOT, data $DATA)"
nice -n 15 python -m experiments.sweep --protocol=cpu --table=all --root="$ROOT" \
  --dataset="folder:$DATA" "$@"
status=$?
if [ $status -eq 0 ]; then
  nice -n 15 python -m experiments.sweep --protocol=cpu --figures --root="$ROOT" \
    --dataset="folder:$DATA" || status=$?
fi
echo "$(date -u '+%F %H:%M UTC') study stops (exit $status)"
exit $status
