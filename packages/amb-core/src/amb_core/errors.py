"""The exceptions AMB raises; each also subclasses the builtin a caller would naturally catch."""

from __future__ import annotations


class AMBError(Exception):
    """Base class of every error raised by AMB itself."""


class InvalidTopicError(AMBError, ValueError):
    """A topic or subscription pattern that breaks the naming rules (see docs/semantics.md)."""


class InvalidPayloadError(AMBError, TypeError, ValueError):
    """A payload or metadata value that is not a plain JSON object; nothing was sent."""


class MessageTooLargeError(InvalidPayloadError):
    """The encoded message is larger than the broker takes (the adapter's ``max_message_size``);
    nothing was sent."""


class InvalidMessageError(AMBError, ValueError):
    """Bytes on a topic that are not an AMB envelope (a foreign or garbled message)."""


class BusClosedError(AMBError, ConnectionError):
    """The bus is not connected (never connected, closing or closed)."""


class BrokerUnavailableError(AMBError, ConnectionError):
    """The broker could not be reached (within ``connect_timeout`` when connecting, within
    ``outage_timeout`` during an outage): a condition that may pass, so retrying later makes sense."""


class BrokerRefusedError(AMBError, PermissionError):
    """The broker answered and refused, for a reason that retrying will not fix: wrong
    credentials, missing permissions, an unknown virtual host. Not a `ConnectionError`."""


class RequestTimeoutError(AMBError, TimeoutError):
    """No reply arrived before the request's timeout."""


class GroupInUseError(AMBError, RuntimeError):
    """A group cannot be deleted (or, on Kafka, purged) while members are running: stop them
    first."""


class AdapterNotInstalledError(AMBError, ImportError):
    """The adapter for a URL scheme is a separate distribution that is not installed."""


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every one of ``secrets`` (passwords, tokens; None and "" ignored) replaced by
    ``***``: for messages that quote a client library's error, which may quote a URL."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
