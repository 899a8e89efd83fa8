"""Experiments that reproduce the report's tables and figures (see experiments/RESULTS.md)."""
