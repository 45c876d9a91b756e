"""Orchestration: the plan and its keys, code identity, staleness, the runner and what one cell computes."""
