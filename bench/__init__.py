"""dlmsd benchmarks: `python -m bench` (or `make bench`) prints one table of figures.

Each row compares a dlmsd figure with a peer library or a ceiling measured in
the same run; results also go to bench/results/latest.json. See bench/README.md.
Benchmarks are not tests, and nothing in `dlmsd/` imports this package.
"""
