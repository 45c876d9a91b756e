"""Evaluation protocols, one file each (a ``bench.protocols.base.Protocol`` subclass with a ``name``, found by
``bench.registry.PROTOCOLS``), the features they share, in-budget validation, and tuning."""

from bench.registry import PROTOCOLS

__all__ = ["PROTOCOLS"]
