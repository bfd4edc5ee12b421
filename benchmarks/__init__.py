"""Side-by-side benchmark of the BentoML service against two hand-written baselines.

`make bench` (or `python -m benchmarks.run`) serves each one pinned to the same CPU, drives it
with wrk pinned to another CPU and writes `benchmarks/results/latest.md` plus a chart.
"""
