"""The suite schema: validated settings, TOML loading, ``--set`` overrides and error text."""

from bench.config.load import load_suite
from bench.config.suite import Suite

__all__ = ["Suite", "load_suite"]
