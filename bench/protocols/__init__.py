"""Evaluation protocols (one file each), the features they share, in-budget validation, tuning."""
