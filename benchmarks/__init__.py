"""AI Orchestra benchmarks: the W1-W4 workloads of ../shared/spec/benchmarks.md.

Run ``python -m benchmarks --help``. Every workload prints its figures and writes JSON and PNG plots to
``benchmarks/results/`` (or ``--out``). Speed goals live here, never in timed tests.
"""
