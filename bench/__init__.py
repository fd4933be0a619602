"""Benchmarks: each measures routed side by side with its baseline in one run, as ratios."""
