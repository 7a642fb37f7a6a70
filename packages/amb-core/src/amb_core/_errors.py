"""The exceptions AMB raises; each also subclasses the builtin a caller would naturally catch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amb_core._message import Message


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
    """No reply arrived before the request's timeout (for a stream: no chunk within ``timeout``
    of the request or of the previous chunk)."""


class NoRespondersError(RequestTimeoutError):
    """The broker reported, at once, that no subscription receives the request, so no reply can
    come. A `RequestTimeoutError` (and a `TimeoutError`), so code written for timeouts keeps
    working; raised only where ``bus.capabilities.reports_no_responders``."""


class RemoteHandlerError(AMBError):
    """The handler of a request raised, and the bus answered with its error instead of a reply.

    ``error_type`` and ``error_message`` are the exception's type name and message, as the
    responder sent them; ``reply`` is the error answer itself (its ``sender``, ``timestamp``...).
    """

    def __init__(self, message: str, *, error_type: str, error_message: str, reply: Message) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error_message = error_message
        self.reply = reply

    def __reduce__(self) -> tuple[object, ...]:
        kwargs = {"error_type": self.error_type, "error_message": self.error_message, "reply": self.reply}
        return (_remote_handler_error, (str(self), kwargs))


def _remote_handler_error(message: str, kwargs: dict[str, object]) -> RemoteHandlerError:
    return RemoteHandlerError(message, **kwargs)  # type: ignore[arg-type]


class RequestCancelledError(AMBError):
    """Raised by `ReplyStream.send` once the requester has gone away (it left its loop, timed
    out or closed its bus): stop the work. A handler that lets it propagate ends quietly: it is
    not a failure, and a group does not retry it."""


class StreamSequenceError(AMBError):
    """A reply stream's chunks arrived out of sequence: one is missing or came twice (chunks
    are numbered, so a stream never has a silent gap)."""


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
