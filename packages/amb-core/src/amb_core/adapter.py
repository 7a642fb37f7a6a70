"""Everything a broker adapter needs, in one module (as `anyio.abc` is for anyio's backends).

An adapter only maps primitives onto its broker: send an envelope, start and stop feeding a
subscription, settle a `Delivery`, report its connection on a `Link`. Everything else (topic
rules, payload checks and limits, ids, request/reply, queues, priority, TTL, concurrency,
decoding and settling, retries and dead letters, riding out outages, connect timeouts) lives in
the bus, so every adapter behaves the same (docs/semantics.md). Import what you need from here
(and `Message` from `amb_core`); the rest of amb_core is private and may change.

Writing one, step by step (the in-memory broker, `amb_core.InMemoryBroker`, is the smallest
complete example; amb-redis, amb-rabbitmq and amb-kafka the network ones):

1. **The class.** Subclass `BrokerAdapter`; declare `capabilities` (`Capabilities`: what your
   broker cannot honour is declared False, and the contract suite checks what you declared).
   Take the options every adapter takes (`Policy`: ``max_attempts``, ``connect_timeout``,
   ``outage_timeout``, ``outage_buffer``, ``group_expiry``) as keyword arguments and pass them
   to ``super().__init__``; `Policy.take` picks them out of ``**options``. Set
   `BrokerAdapter.max_message_size` and `BrokerAdapter.describe` (never with credentials).
2. **Connecting.** `BrokerAdapter.connect` opens what the adapter needs; the bus cancels it after
   ``connect_timeout``. Map the client library's exceptions to `BrokerUnavailableError` (may
   pass: retry later) or `BrokerRefusedError` (will not pass: credentials, permissions) in one
   place, with `error_boundary`; quote its messages only through `scrub`.
3. **Publishing.** Encode with `encode` (``encode(message, self.max_message_size)`` raises
   `MessageTooLargeError` before anything is sent) and put the bytes on ``message.topic``. The
   bus has already validated the topic, payload, key and id (`new_id`). Reply inboxes are the
   topics under `INBOX_PREFIX`; everything under `RESERVED_PREFIX` is the bus's own.
4. **Subscribing.** `BrokerAdapter.subscribe` hands you a `Subscription`: its ``pattern`` (a
   topic, or a pattern with AMQP wildcards: `is_pattern`, `pattern_regex`, `compile_pattern`,
   `topic_matches`), its ``group`` (None: every subscription gets every message; a name: its
   members share them, and the group keeps what arrives while it has none: `GroupInfo`,
   `note_backlog`). Feed it raw bytes with `Subscription.receive` (the bus decodes, and logs
   and settles what is not an envelope), or, when one decoded message goes to several
   subscriptions, `decode` (or `decode_or_log`) once and `Subscription.offer` /
   `Subscription.deliver` it (`RouteTable` routes topics to subscriptions in constant time).
   An awaitable returned by ``receive``, and ``deliver``, are the backpressure: await them.
5. **Settling.** Where the broker can redeliver, hand each message over with a `Delivery`
   subclass that maps the bus's decision (`Delivery.ack`, `Delivery.retry`,
   `Delivery.dead_letter`, `Delivery.release`) onto the broker. The bus decides; you never
   retry or dead-letter on your own.
6. **Outages.** A network adapter sets ``self.link = Link(name)`` and reports on it
   (`Link.lost`, `Link.retrying`, `Link.restored`); the bus then buffers, waits and raises for
   its callers. Reconnect with `Link.reconnect` (`keep_reconnecting` with the link's logging;
   exponential `backoff_delays` with jitter), run background work in a `TaskSet` (closing it
   cancels and awaits every task, and a crash is reported, not lost), and log what can repeat
   without bound through `throttled`, with `message_fields` as ``extra`` for lines about one
   message.
7. **Registering.** Name the class in your distribution's ``amb.adapters`` entry points
   (``myscheme = "my_package:MyBroker"``); `BrokerAdapter.from_url` builds it from a URL.
   Then run the contract suite against it (tests-contract/README.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from amb_core._supervision import TaskSet, error_boundary, keep_reconnecting
from amb_core.backoff import backoff_delays
from amb_core.delivery import Delivery
from amb_core.errors import (
    AMBError,
    BrokerRefusedError,
    BrokerUnavailableError,
    GroupInUseError,
    InvalidMessageError,
    InvalidPayloadError,
    InvalidTopicError,
    MessageTooLargeError,
    scrub,
)
from amb_core.groups import BACKLOG_NOTICE, GroupInfo, note_backlog
from amb_core.ids import new_id
from amb_core.link import Link
from amb_core.logs import message_fields, throttled
from amb_core.message import Message
from amb_core.policy import DEFAULT_GROUP_EXPIRY, Policy
from amb_core.routing import RouteTable
from amb_core.subscription import Subscription
from amb_core.topics import (
    INBOX_PREFIX,
    MAX_TOPIC_LENGTH,
    RESERVED_PREFIX,
    compile_pattern,
    is_pattern,
    pattern_regex,
    topic_matches,
    validate_group,
    validate_pattern,
    validate_topic,
)
from amb_core.wire import CONTENT_TYPE, decode, decode_or_log, encode, log_invalid

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "BACKLOG_NOTICE",
    "CONTENT_TYPE",
    "DEFAULT_GROUP_EXPIRY",
    "INBOX_PREFIX",
    "MAX_TOPIC_LENGTH",
    "RESERVED_PREFIX",
    "AMBError",
    "BrokerAdapter",
    "BrokerRefusedError",
    "BrokerUnavailableError",
    "Capabilities",
    "Delivery",
    "GroupInUseError",
    "GroupInfo",
    "InvalidMessageError",
    "InvalidPayloadError",
    "InvalidTopicError",
    "Link",
    "Message",
    "MessageTooLargeError",
    "Policy",
    "RouteTable",
    "Subscription",
    "TaskSet",
    "backoff_delays",
    "compile_pattern",
    "decode",
    "decode_or_log",
    "encode",
    "error_boundary",
    "is_pattern",
    "keep_reconnecting",
    "log_invalid",
    "message_fields",
    "new_id",
    "note_backlog",
    "pattern_regex",
    "scrub",
    "throttled",
    "topic_matches",
    "validate_group",
    "validate_pattern",
    "validate_topic",
]


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
    #: The connection, for adapters that have one (see `amb_core.link`).
    link: Link | None = None
    #: The largest encoded envelope, in bytes, the broker takes; None for no limit. Adapters
    #: pass it to `amb_core.wire.encode`, which raises `MessageTooLargeError` above it.
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

    # -- groups over time (amb_core.groups); optional for third-party adapters -----------------

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
