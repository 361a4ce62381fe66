"""Errors that reach the user as one line (``lossless CMD: error: ...``) and an exit code."""

from __future__ import annotations


class LosslessError(Exception):
    """A user-facing error: the message names the file, line or component at fault.

    ``exit_code`` is 2 for usage and input errors (the default), 1 for a failed verdict.
    """

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class SettingsError(LosslessError):
    """A setting is invalid (negative, inconsistent, or cannot fit the pod's grace period)."""


class RegistryError(Exception):
    """A service registry (etcd, ZooKeeper, Consul) could not be reached, timed out, or refused
    a call. The message is one line naming the registry and what failed."""
