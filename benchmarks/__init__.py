"""Benchmarks run by `nox -s bench`: each prints ratios against baselines measured in the same run."""
