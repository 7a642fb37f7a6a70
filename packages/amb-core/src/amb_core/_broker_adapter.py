"""`BrokerAdapter` and `Capabilities`: the interface a broker adapter implements.

Adapter authors import them from `amb_core.adapter`, whose docstring walks through writing one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from amb_core._policy import Policy

if TYPE_CHECKING:
    from typing_extensions import Self

    from amb_core._groups import GroupInfo
    from amb_core._link import Link
    from amb_core._message import Message
    from amb_core._subscription import Subscription


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
    #: The broker reports at once that no subscription receives a request, so that `request()`
    #: raises `NoRespondersError` instead of waiting for its timeout.
    reports_no_responders: bool = False
    #: The broker reports how many subscriptions receive a request (each ungrouped one, one
    #: per group), so that `gather()` returns as soon as all of them have answered.
    counts_receivers: bool = False
    #: One publisher's messages without a key reach a subscription in publish order. False:
    #: only messages sharing a key keep their order (Kafka spreads keyless messages over a
    #: topic's partitions, so that a group shares them).
    keyless_order: bool = True
    #: A group hands one key's messages to one member at a time, so the group as a whole
    #: handles them in publish order (while no member joins or leaves). False: each member
    #: sees a key's messages in order, but two members may handle consecutive ones at once.
    group_key_order: bool = False


class BrokerAdapter(ABC):
    """Base class of broker adapters. One adapter instance serves one `MessageBus`.

    Subclasses call ``super().__init__(**policy_options)`` with the `Policy` options they were
    given (``max_attempts``, ``connect_timeout``, ``outage_timeout``, ``outage_buffer``): the
    bus applies them the same way on every broker.

    An adapter feeds subscriptions with `Subscription.receive` (raw bytes: the bus decodes,
    and logs and settles what is not a valid envelope) or, when it decoded the bytes itself
    to share one message among several subscriptions, `Subscription.offer` / `deliver`. Where
    the broker can redeliver, each message comes with a `Delivery` that maps the bus's decision
    (ack, retry, dead-letter, release) onto the broker.

    A network adapter sets `link` to a `Link` and reports its connection on it; the bus then
    buffers, waits and raises for the caller during an outage. The in-memory broker has none.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Options of adapters that never called ``super().__init__``.
    policy: Policy = Policy()
    #: The connection, for adapters that have one (see `amb_core.Link`).
    link: Link | None = None
    #: The largest encoded envelope, in bytes, the broker takes; None for no limit. Adapters
    #: pass it to `amb_core.adapter.encode`, which raises `MessageTooLargeError` above it.
    max_message_size: int | None = None

    def __init__(self, **policy_options: Any) -> None:
        self.policy = Policy(**policy_options)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build the adapter for ``url``; the entry point of the ``amb.adapters`` group calls this."""
        return cls(url, **options)  # type: ignore[call-arg]

    def describe(self) -> str:
        """Which broker, for log lines and errors; never with credentials."""
        return type(self).__name__

    @abstractmethod
    async def connect(self) -> None:
        """Connect to the broker; raise `BrokerUnavailableError` when it cannot be reached and
        `BrokerRefusedError` when it refuses (credentials, permissions). The bus cancels this
        after ``connect_timeout``: leave nothing open when cancelled."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Close every connection. Subscriptions were already removed by the bus."""

    @abstractmethod
    async def publish(self, message: Message, *, confirm: bool) -> None:
        """Send ``message`` to ``message.topic``.

        With ``confirm`` return only once the broker has accepted it; without, do not wait for
        the broker's acknowledgement. A message no subscription can receive is logged at WARNING
        when ``confirm`` is set. When the connection is lost, call ``link.lost`` and raise
        `BrokerUnavailableError` if the message was not taken: the bus keeps it for later.
        """

    async def publish_tracked(
        self, message: Message, receivers: Callable[[int], None], *, count: bool = False
    ) -> None:
        """Send a request as ``publish(message, confirm=False)`` does, and call ``receivers(n)``
        (at most once, now or later) with what the broker says about who receives it.

        ``n == 0`` means that no subscription receives it, and only an adapter declaring
        `Capabilities.reports_no_responders` may say so (never as a guess). With ``count``, an
        adapter declaring `Capabilities.counts_receivers` calls it with the exact number of
        subscriptions that receive it (each ungrouped one, one per group); otherwise a positive
        ``n`` only means "some". The default, for brokers that cannot tell, publishes and never
        calls it.
        """
        await self.publish(message, confirm=False)

    async def publish_raw(self, topic: str, data: bytes) -> None:
        """Put ``data`` on ``topic`` as-is, exactly where `publish` puts an envelope, as a foreign
        producer would. The contract suite uses it to check that foreign or garbled messages are
        logged and settled without stopping the consumer."""
        raise NotImplementedError(f"{type(self).__name__} cannot publish raw bytes")

    @abstractmethod
    async def subscribe(self, subscription: Subscription) -> None:
        """Start feeding ``subscription``; return only once a publish made after this returns
        will reach it."""

    @abstractmethod
    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop feeding ``subscription``. Messages it had not yet been given stay with the broker
        where the broker keeps them (a group's shared queue)."""

    # -- groups over time (amb_core.GroupInfo); optional for third-party adapters -----------------

    async def list_groups(self) -> list[GroupInfo]:
        """Every group on the broker (expired ones removed first) with its members and backlog."""
        raise NotImplementedError(f"{type(self).__name__} cannot list groups")

    async def purge_group(self, group: str, pattern: str) -> int:
        """Drop the messages waiting for ``group`` on ``pattern`` (not those a member is handling
        now); return how many. 0 for a group that does not exist."""
        raise NotImplementedError(f"{type(self).__name__} cannot purge groups")

    async def delete_group(self, group: str, pattern: str) -> bool:
        """Remove ``group`` on ``pattern`` with its backlog; False if it did not exist. Raise
        `GroupInUseError` while it has members."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete groups")
