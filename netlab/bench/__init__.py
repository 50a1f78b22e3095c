"""Benchmarks run by `netlab bench`."""
