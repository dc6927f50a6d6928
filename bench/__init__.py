"""Benchmarks behind `evergreen bench`: side-by-side ratios measured on this machine."""

import os

# `python -m bench.X` skips the `evergreen` console, which sets this before torch loads its
# OpenMP runtime (see app.cli.console): spinning OpenMP waits slow every neighbour tenfold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
