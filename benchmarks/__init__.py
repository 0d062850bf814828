"""Benchmarks of medbalance against reference implementations; run ``python -m benchmarks``."""
