"""The interface a broker adapter implements.

An adapter only maps primitives onto its broker: send an envelope, start and stop feeding a
subscription. Everything else (topic rules, payload checks, ids, request/reply, queues, priority,
TTL, concurrency, handler errors, shutdown) lives in the bus, so every adapter behaves the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from typing_extensions import Self

    from amb_core.message import Message
    from amb_core.subscription import Subscription


@dataclass(frozen=True)
class Capabilities:
    """What an adapter's broker can honour; the contract suite checks the declared behaviour.

    Each flag is a rule of docs/semantics.md. An adapter that cannot honour one declares it False
    and documents what happens instead.
    """

    #: Messages that queue up for a busy subscription come out highest priority first.
    priority: bool = True
    #: A subscription keeps receiving after the broker restarts (the adapter reconnects itself).
    survives_restart: bool = True
    #: A grouped subscription whose handler raised gets the message again (at-least-once).
    redelivers_failed: bool = False


class BrokerAdapter(ABC):
    """Base class of broker adapters. One adapter instance serves one `MessageBus`.

    An adapter receives `Subscription` objects and feeds them with ``await subscription.deliver(
    message, ack)``; the bus takes it from there. ``ack`` (optional) is called once, with True when
    the handler succeeded or the message was dropped on purpose (expired, say) and False when the
    handler raised, so an at-least-once broker can acknowledge, retry or dead-letter.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build the adapter for ``url``; the entry point of the ``amb.adapters`` group calls this."""
        return cls(url, **options)  # type: ignore[call-arg]

    @abstractmethod
    async def connect(self) -> None:
        """Connect to the broker; raise `BrokerUnavailableError` when it cannot be reached."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Close every connection. Subscriptions were already removed by the bus."""

    @abstractmethod
    async def publish(self, message: Message, *, confirm: bool) -> None:
        """Send ``message`` to ``message.topic``.

        With ``confirm`` return only once the broker has accepted it; without, do not wait for
        the broker's acknowledgement. A message no subscription can receive is logged at WARNING
        when ``confirm`` is set.
        """

    async def publish_raw(self, topic: str, data: bytes) -> None:
        """Put ``data`` on ``topic`` as-is, exactly where `publish` puts an envelope, as a foreign
        producer would. The contract suite uses it to check that foreign or garbled messages are
        logged and skipped without stopping the consumer."""
        raise NotImplementedError(f"{type(self).__name__} cannot publish raw bytes")

    @abstractmethod
    async def subscribe(self, subscription: Subscription) -> None:
        """Start feeding ``subscription``; return only once a publish made after this returns
        will reach it."""

    @abstractmethod
    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop feeding ``subscription``. Messages it had not yet been given stay with the broker
        where the broker keeps them (a group's shared queue)."""
