"""config: errors."""

from __future__ import annotations


class ConfigError(ValueError):
    """A suite that cannot run; the message names the file, the key, the bad value and what is allowed."""
