"""Benchmarks behind `evergreen bench`: side-by-side ratios measured on this machine."""
