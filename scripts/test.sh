#!/usr/bin/env bash
# Sets up .venv on first use, then runs the whole test suite (about 4 minutes on 2 CPU cores, plus the first install).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# The house style first (pyproject.toml): `pyink .` and `ruff check --fix .` repair what fails.
ruff check --quiet .
pyink --check --quiet .
# Tests run tiny networks, where XLA's compile time dominates: compile with less optimisation
# and share compiled programs between the test processes.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$PWD/.venv/jax_cache}
exec python -m pytest -n 2 --dist loadfile -q "$@"
