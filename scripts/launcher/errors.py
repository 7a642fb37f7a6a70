"""The launcher's one error type."""

from __future__ import annotations


class ServiceError(RuntimeError):
    """A broker could not be started, stopped or reached."""
