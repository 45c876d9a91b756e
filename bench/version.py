"""bench's version: the installed distribution's, else the source tree's."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed

SOURCE = "0.1.0"  # pyproject.toml's version


def version() -> str:
    try:
        return installed("pretext-bench")
    except PackageNotFoundError:
        return SOURCE
