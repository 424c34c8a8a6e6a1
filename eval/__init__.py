"""Evaluation harness for skillmem: environments, runner, metrics, reports and benchmarks."""
