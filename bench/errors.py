"""The errors a user can meet, by kind. Each is one line that names what is wrong (the file, the key, the value,
the folder, the store) and what to do; ``bench`` prints it and exits with the kind's ``exit_code``.

Code decides by type, never by a message's text. Errors of other libraries are turned into these kinds where they
are met (``bench.store.client.store_failure`` for the tracking store, ``bench.files`` for full or read-only disks).
"""

from __future__ import annotations


class UserError(Exception):
    """Input or surroundings to fix; nothing is wrong with bench. ``exit_code``: the process's exit status."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A suite that cannot run: the message names the file, the key, the bad value and what is allowed."""


class UnknownName(ConfigError, KeyError):
    """A name no registry holds (a task, protocol, encoder or dataset); the message lists the registered ones."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(f"unknown {kind} {name!r}; registered: {', '.join(known) or '(none)'}")
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])

    def __reduce__(self) -> tuple:  # pickled as it was made (Ray sends a worker's errors to the driver)
        return type(self), (self.kind, self.name, self.known)


class PluginError(ConfigError):
    """A user's task, encoder, dataset or protocol that cannot be used: the message names its ``module:attribute``,
    the file and the problem (not found, a syntax error, an import that fails, not the right kind of object)."""


class DataError(UserError, ValueError):
    """The data cannot be found or read, or does not fit the suite (too few images, too few classes)."""


class OutputError(UserError):
    """A file or folder cannot be written (read-only, full, not permitted); the message names it."""


class StoreError(UserError):
    """The tracking store cannot be opened or written; the message names it and says what to do."""


class ServiceError(UserError):
    """A service (PostgreSQL, the MLflow server, a Ray node) cannot be started or does not match the driver."""


class LeaseBusy(UserError):
    """Another live invocation holds the suite."""

    exit_code = 3


class LeaseLost(UserError):
    """This invocation's lease was broken by another (its heartbeat stalled for longer than the expiry)."""

    exit_code = 1
