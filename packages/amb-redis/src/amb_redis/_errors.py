"""The adapter's error boundary: every exception redis-py, the socket or Redis itself raises
becomes one of amb-core's types here, and nowhere else.

- refusals that retrying will not fix (wrong password, ``NOAUTH``, ``WRONGPASS``, ``NOPERM``, an
  unknown database) -> `BrokerRefusedError` (a `PermissionError`, not a `ConnectionError`);
- anything that says the server cannot be reached or stopped answering (refused or reset
  connections, timeouts, TLS failures, a peer speaking another protocol, Redis still loading
  its data) -> `BrokerUnavailableError`;
- other error replies stay redis-py `ResponseError`s: the adapter handles the ones it expects
  (``NOGROUP``, ``NOSCRIPT``) itself.

Messages name the server ("Redis at host:port") and never contain its password: redis-py's
messages may quote the URL, so they are scrubbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from functools import partial

from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    BusyLoadingError,
    NoPermissionError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from amb_core.adapter import AMBError, BrokerRefusedError, BrokerUnavailableError, error_boundary, scrub

#: Error reply prefixes that mean "these credentials may not do this", whoever parsed them.
_REFUSALS = ("NOAUTH", "WRONGPASS", "NOPERM")
#: Error replies to the connection handshake that a different setting fixes, not a retry.
_BAD_SETTINGS = ("DB index is out of range", "invalid DB index", "SELECT is not allowed")


class Boundary:
    """Maps errors for one server, ``name`` ("Redis at 127.0.0.1:6379"), hiding ``secrets``."""

    __slots__ = ("name", "secrets")

    def __init__(self, name: str, *secrets: str | None) -> None:
        self.name = name
        self.secrets = tuple(secret for secret in secrets if secret)

    def reason(self, error: BaseException) -> str:
        """What went wrong, in words fit for a log line: the error's text without secrets."""
        text = str(error).strip() or type(error).__name__
        return scrub(text, *self.secrets)

    def translate(self, error: BaseException, doing: str = "") -> BaseException:
        """The amb-core error for ``error`` (unchanged if it is one already, or not a Redis,
        socket or timeout error). ``doing`` says what was being done, for the message."""
        if isinstance(error, AMBError):
            return error
        where = f"{self.name} {doing}".rstrip() if doing else self.name
        if refused(error):
            return BrokerRefusedError(f"{where}: refused: {self.reason(error)}")
        if isinstance(error, (RedisTimeoutError, asyncio.TimeoutError)):
            return BrokerUnavailableError(f"{where}: no answer in time ({self.reason(error)})")
        if isinstance(error, ResponseError) and _bad_setting(error):
            return BrokerRefusedError(f"{where}: refused: {self.reason(error)}")
        if isinstance(error, (RedisConnectionError, OSError, EOFError, ssl.SSLError, BusyLoadingError)):
            return BrokerUnavailableError(f"{where}: unreachable: {self.reason(error)}")
        if isinstance(error, RedisError) and not isinstance(error, ResponseError):
            # A reply redis-py could not make sense of: not a Redis server we can talk to.
            return BrokerUnavailableError(f"{where}: {self.reason(error)}")
        return error

    def mapping(self, doing: str = "") -> contextlib.AbstractContextManager[None]:
        """Run the block, raising the amb-core error for whatever it raises (see `translate`),
        unchained (redis-py's text may quote the URL). Cancellation passes through unchanged."""
        return error_boundary(partial(self.translate, doing=doing))


def refused(error: BaseException) -> bool:
    """Whether ``error`` is Redis refusing these credentials or this user's permissions."""
    if isinstance(
        error,
        (AuthenticationError, AuthorizationError, AuthenticationWrongNumberOfArgsError, NoPermissionError),
    ):
        return True
    # Replies parsed by this adapter are plain ResponseErrors: recognise them by their prefix.
    return isinstance(error, ResponseError) and str(error).startswith(_REFUSALS)


def _bad_setting(error: ResponseError) -> bool:
    text = str(error)
    return any(marker in text for marker in _BAD_SETTINGS)
