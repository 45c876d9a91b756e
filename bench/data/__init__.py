"""Datasets: decoding, the on-disk cache, image folders, seeded nested label budgets."""
