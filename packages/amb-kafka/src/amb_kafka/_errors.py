"""The adapter's error boundary: the one place where aiokafka's (and the socket layer's)
exceptions become amb-core's, so a caller only ever sees these:

- `BrokerRefusedError` (a PermissionError, not a ConnectionError): the broker answered and
  refused: SASL authentication, topic / group / cluster authorization, a request it will never
  take (an invalid topic, a replication factor it cannot have). Retrying will not help.
- `MessageTooLargeError`: the broker's (or the producer's) size limit.
- `BrokerUnavailableError` (a ConnectionError): everything else, which may pass: nothing
  listening, a peer that does not answer or speaks another protocol, TLS mismatches, timeouts,
  retriable broker errors.

Messages name the broker (``Kafka at host:port``), say what was being done and why it failed,
and never contain a secret: the SASL password is scrubbed from whatever aiokafka says, and the
original exception is not chained (``raise ... from None``), so a traceback does not show it.
"""

from __future__ import annotations

import asyncio
import ssl
from contextlib import AbstractContextManager

from aiokafka import errors as kafka  # type: ignore[import-untyped]

from amb_core.adapter import (
    AMBError,
    BrokerRefusedError,
    BrokerUnavailableError,
    MessageTooLargeError,
    error_boundary,
    scrub,
)

#: The broker refused who we are or what we asked for: retrying will not change its mind.
REFUSED: tuple[type[BaseException], ...] = (
    kafka.SaslAuthenticationFailed,
    kafka.AuthenticationFailedError,
    kafka.AuthenticationMethodNotSupported,
    kafka.UnsupportedSaslMechanismError,
    kafka.IllegalSaslStateError,
    kafka.TopicAuthorizationFailedError,
    kafka.GroupAuthorizationFailedError,
    kafka.ClusterAuthorizationFailedError,
    kafka.TransactionalIdAuthorizationFailed,
    kafka.DelegationTokenAuthorizationFailed,
)
#: The record (batch) is larger than the broker or the producer takes.
TOO_LARGE: tuple[type[BaseException], ...] = (
    kafka.MessageSizeTooLargeError,
    kafka.RecordListTooLargeError,
    kafka.RecordTooLargeError,
)
#: What the network, the event loop or aiokafka raise when the broker cannot be reached.
UNREACHABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError too on 3.11+
    EOFError,
    asyncio.TimeoutError,  # not an OSError on 3.10
    ssl.SSLError,
    kafka.KafkaConnectionError,
    kafka.NodeNotReadyError,
    kafka.NoBrokersAvailable,
    kafka.KafkaTimeoutError,
    kafka.RequestTimedOutError,
    kafka.KafkaProtocolError,  # another protocol on the port
    kafka.ProducerClosed,
)
#: Everything the boundary maps (other exceptions are bugs and pass through unchanged).
MAPPED: tuple[type[Exception], ...] = (kafka.KafkaError, *UNREACHABLE)


def kind(error: BaseException) -> type[AMBError]:
    """Which of amb-core's errors ``error`` is."""
    if isinstance(error, AMBError):
        return type(error)
    if isinstance(error, REFUSED):
        return BrokerRefusedError
    if isinstance(error, TOO_LARGE):
        return MessageTooLargeError
    if isinstance(error, UNREACHABLE) or getattr(error, "retriable", False):
        return BrokerUnavailableError
    if isinstance(error, kafka.BrokerResponseError):
        # The broker answered with a non-retriable error code: an invalid topic name, a
        # replication factor the cluster cannot have, a policy violation...
        return BrokerRefusedError
    return BrokerUnavailableError


def is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the broker could not be reached (as opposed to a refusal)."""
    return kind(error) is BrokerUnavailableError


class Boundary:
    """Maps exceptions for one adapter: ``name`` (``Kafka at host:port``) goes in every message,
    ``secrets`` (the SASL password) never do."""

    __slots__ = ("_secrets", "name")

    def __init__(self, name: str, secrets: tuple[str | None, ...] = ()) -> None:
        self.name = name
        self._secrets = tuple(secret for secret in secrets if secret)

    def reason(self, error: BaseException) -> str:
        """What went wrong, in words, without secrets."""
        text, name = str(error), type(error).__name__
        if not text:
            text = name
        elif not isinstance(error, kafka.KafkaError):  # aiokafka's own say their name already
            text = f"{name}: {text}"
        return scrub(text, *self._secrets)

    def error(self, error: BaseException, doing: str) -> AMBError:
        """The amb-core error for ``error``, raised while ``doing`` something."""
        if isinstance(error, AMBError):
            return error
        return kind(error)(f"{self.name}: {doing}: {self.reason(error)}")

    def __call__(self, doing: str) -> AbstractContextManager[None]:
        """``with boundary("creating topic x"):`` raises only amb-core's errors (unchained) for
        what the client library raises."""
        return error_boundary(lambda error: self.error(error, doing), catch=MAPPED)
