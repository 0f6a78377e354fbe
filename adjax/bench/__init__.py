"""Benchmarks run as `python -m adjax.bench.<name>`; they measure, they are not tests."""
