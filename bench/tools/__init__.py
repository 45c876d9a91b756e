"""Measurements beside the benchmark: throughput of the data path, parity of the two data paths."""
