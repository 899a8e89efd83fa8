"""Experiments that reproduce the report's tables and figures (see experiments/README.md)."""
