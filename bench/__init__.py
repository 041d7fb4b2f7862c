"""Benchmarks: `make bench` (`python -m bench`) measures mjq beside baselines from the same run.

Every benchmark is a module (`p1_submit` … `p6_overhead`) with `run(stack) -> list[Row]`;
`bench.harness` holds the shared services and measurement helpers, `bench.__main__`
runs them in order and writes `bench/results/latest.md`.
"""
