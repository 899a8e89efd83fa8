#!/usr/bin/env bash
# Sets up .venv on first use, then runs the whole test suite (about 5 minutes on 2 CPU cores).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest -n 2 --dist loadfile -q "$@"
