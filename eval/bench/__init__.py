"""Benchmarks of the harness (`python -m eval bench ...`)."""
