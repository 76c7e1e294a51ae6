"""Benchmarks: `python -m tests.bench` runs the comparison suite (see __main__.py)."""
