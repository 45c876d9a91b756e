"""Pretraining: the one training loop, optimisers and schedules, health measured through its hooks."""
