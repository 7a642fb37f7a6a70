"""The error boundary: the one place where aio-pika's, aiormq's, pamqp's and the OS's exceptions
become amb-core's, with a message that names the broker (URL without its password) and the reason.

- The broker refused, and retrying will not help: wrong credentials (``ACCESS_REFUSED``), an
  unknown virtual host or one the user may not open (``NOT_ALLOWED``), missing permissions, a
  queue that exists with other arguments -> `BrokerRefusedError` (a `PermissionError`, not a
  `ConnectionError`).
- Anything else the client library or the network raises (nothing listening, a reset, a
  timeout, a peer that does not speak AMQP, a TLS mismatch, a closed connection or channel)
  -> `BrokerUnavailableError` (a `ConnectionError`: it may pass).

Every text quoted from the client library goes through `amb_core.adapter.scrub` first.
"""

from __future__ import annotations

import asyncio
import ssl
from contextlib import AbstractContextManager
from urllib.parse import quote

import aiormq.exceptions
import pamqp.exceptions

from amb_core.adapter import AMBError, BrokerRefusedError, BrokerUnavailableError, error_boundary, scrub

#: What aio-pika, aiormq and pamqp raise for a broker that is gone, refuses or misbehaves, and
#: what the OS raises underneath (asyncio.TimeoutError is not an OSError before Python 3.11;
#: aio-pika raises RuntimeError for an operation on a closed connection).
CLIENT_ERRORS: tuple[type[Exception], ...] = (
    aiormq.exceptions.AMQPError,
    pamqp.exceptions.PAMQPException,
    OSError,
    EOFError,
    RuntimeError,
    asyncio.TimeoutError,
)

#: Errors that end a connection or one of its channels (publishing on it again is pointless),
#: as opposed to a refusal of one operation.
_REFUSED_CHANNEL_ERRORS = (
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.ChannelLockedResource,
    aiormq.exceptions.ChannelNotFoundEntity,
)


class Boundary:
    """Translates the client library's exceptions for one broker.

    ``name`` is how errors name it ("RabbitMQ at amqp://guest:***@host:5672/"); ``password`` is
    scrubbed from every text quoted; ``vhost`` names the virtual host in a refusal.
    """

    __slots__ = ("_secrets", "name", "vhost")

    def __init__(self, name: str, password: str | None, vhost: str) -> None:
        self.name = name
        self.vhost = vhost
        self._secrets = (password, quote(password, safe="")) if password else ()

    def scrub(self, text: str) -> str:
        return scrub(text, *self._secrets)

    def reason(self, error: BaseException, timeout: str | None = None) -> str:
        """What went wrong, in a few words, never empty and never with the password;
        ``timeout`` names the time limit a timeout exceeded ("connect_timeout (10.0 s)")."""
        if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
            return f"no answer within {timeout}" if timeout else "no answer in time"
        if isinstance(error, aiormq.exceptions.IncompatibleProtocolError):
            return "the peer closed the connection before speaking AMQP 0-9-1 (not a RabbitMQ port?)"
        if isinstance(error, (aiormq.exceptions.ProtocolSyntaxError, pamqp.exceptions.PAMQPException)):
            return f"the peer does not speak AMQP 0-9-1 ({_text(error)})"
        if isinstance(error, ssl.SSLError) or isinstance(error.__cause__, ssl.SSLError):
            return f"TLS failed ({_text(error)}): is this a TLS port, and the right certificate?"
        return self.scrub(_text(error))

    def error(self, error: BaseException, doing: str, timeout: str | None = None) -> AMBError:
        """The amb-core exception for ``error``, raised while ``doing`` ("the connection",
        "publishing message x", ...) under the time limit ``timeout`` if any."""
        if isinstance(error, AMBError):
            return error
        refused = self._refusal(error)
        if refused is not None:
            return BrokerRefusedError(f"{self.name} refused {doing}: {refused}")
        return BrokerUnavailableError(f"{self.name}: {doing} failed: {self.reason(error, timeout)}")

    def why(self, error: BaseException, timeout: str | None = None) -> str:
        """Only the reason (for lines that name the broker already): the refusal, or what
        went wrong."""
        refused = self._refusal(error)
        return f"refused: {refused}" if refused is not None else self.reason(error, timeout)

    def _refusal(self, error: BaseException) -> str | None:
        """Why the broker refused for good, or None if ``error`` is not such a refusal."""
        if isinstance(
            error, (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.AuthenticationError)
        ):
            return (
                f"wrong user name or password, or a mechanism it does not offer ({self.scrub(_text(error))})"
            )
        if isinstance(error, aiormq.exceptions.ConnectionNotAllowed) or (
            # aiormq reports RabbitMQ's answer to Connection.Open for a vhost it will not open
            # (NOT_ALLOWED, 530) as an unexpected frame, without the reply text.
            isinstance(error, aiormq.exceptions.InvalidFrameError)
            and "Connection.OpenOk" in str(error)
            and "Connection.Close" in str(error)
        ):
            return f"virtual host {self.vhost!r} does not exist or access to it is refused"
        if isinstance(error, aiormq.exceptions.ConnectionClosed) and _code(error) in (403, 530):
            return self.scrub(_text(error))
        if isinstance(error, _REFUSED_CHANNEL_ERRORS):
            return self.scrub(_text(error))
        return None

    def mapping(self, doing: str, timeout: str | None = None) -> AbstractContextManager[None]:
        """Raise what the client library raises inside as `error` translates it, chained to the
        original (aiormq censors the password in the URLs it quotes)."""
        return error_boundary(
            lambda error: self.error(error, doing, timeout), catch=CLIENT_ERRORS, chain=True
        )


def is_refusal(error: BaseException) -> bool:
    """Whether ``error`` is the broker refusing one operation on a channel (the connection and
    the other channels keep working)."""
    return isinstance(error, _REFUSED_CHANNEL_ERRORS)


def _code(error: BaseException) -> int | None:
    code = error.args[0] if error.args else None
    return code if isinstance(code, int) else None


def _text(error: BaseException) -> str:
    """``error``'s own words: for an OSError-like ``(errno, text)``, the text."""
    args = error.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return args[1]
    if len(args) == 1 and isinstance(args[0], str):
        return args[0] or type(error).__name__
    if len(args) == 1 and isinstance(args[0], BaseException):
        return _text(args[0])
    return str(error) or type(error).__name__
