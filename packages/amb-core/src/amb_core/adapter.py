"""Everything a broker adapter needs, in one module (as `anyio.abc` is for anyio's backends).

An adapter only maps primitives onto its broker: send an envelope, start and stop feeding a
subscription, settle a `Delivery`, report its connection on a `Link`. Everything else (topic
rules, payload checks and limits, ids, request/reply, queues, priority, TTL, concurrency,
decoding and settling, retries and dead letters, riding out outages, connect timeouts) lives in
the bus, so every adapter behaves the same (docs/semantics.md). Import what you need from here;
the rest of amb_core (modules named ``_x``) is private and may change in any release.

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
   `MessageTooLargeError` before anything is sent) and put the bytes on ``message.topic``
   (`CONTENT_TYPE` names the envelope where the broker has content types). The bus has already
   validated the topic (`validate_topic`; at most `MAX_TOPIC_LENGTH` characters), the payload
   (a JSON object at most `MAX_DEPTH` levels deep), the key and the id (`new_id`). Reply
   inboxes are the topics under `INBOX_PREFIX`; everything under `RESERVED_PREFIX` is the
   bus's own.
4. **Subscribing.** `BrokerAdapter.subscribe` hands you a `Subscription`: its ``pattern`` (a
   topic, or a pattern with AMQP wildcards: `is_pattern`, `pattern_regex`, `compile_pattern`,
   `topic_matches`, `validate_pattern`) and its ``group`` (None: every subscription gets every
   message; a name (`validate_group`): its members share them, and the group keeps what
   arrives while it has none, for ``group_expiry``, default `DEFAULT_GROUP_EXPIRY`; see
   `GroupInfo`, and `note_backlog` for a member joining `BACKLOG_NOTICE` waiting messages).
   Feed it raw bytes with `Subscription.receive` (the bus decodes, and logs and settles what is
   not an envelope), or, when one decoded message goes to several subscriptions, `decode` (or
   `decode_or_log`) once and `Subscription.offer` / `Subscription.deliver` it (`RouteTable`
   routes topics to subscriptions in constant time; `log_invalid` says, throttled, what was
   not an envelope). An awaitable returned by ``receive``, and ``deliver``, are the
   backpressure: await them.
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
   message (`note_unreceived` is the line for a confirmed message the broker says nobody
   receives).
7. **Errors.** Besides those above, an adapter raises `GroupInUseError` (deleting or purging a
   group whose members run), `InvalidTopicError` (a name the broker cannot take); the bus
   raises `InvalidPayloadError` and, for bytes that are not an envelope, `decode` raises
   `InvalidMessageError`. All are `AMBError`s.
8. **Registering.** Name the class in your distribution's ``amb.adapters`` entry points
   (``myscheme = "my_package:MyBroker"``); `BrokerAdapter.from_url` builds it from a URL.
   Then run the contract suite against it (tests-contract/README.md).
"""

from __future__ import annotations

from amb_core._backoff import backoff_delays
from amb_core._broker_adapter import BrokerAdapter, Capabilities
from amb_core._delivery import Delivery
from amb_core._errors import (
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
from amb_core._groups import BACKLOG_NOTICE, GroupInfo, note_backlog
from amb_core._ids import new_id
from amb_core._link import Link
from amb_core._logs import message_fields, note_unreceived, throttled
from amb_core._message import Message
from amb_core._payload import MAX_DEPTH
from amb_core._policy import DEFAULT_GROUP_EXPIRY, Policy
from amb_core._routing import RouteTable
from amb_core._subscription import Subscription
from amb_core._supervision import TaskSet, error_boundary, keep_reconnecting
from amb_core._topics import (
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
from amb_core._wire import CONTENT_TYPE, decode, decode_or_log, encode, log_invalid

__all__ = [
    "BACKLOG_NOTICE",
    "CONTENT_TYPE",
    "DEFAULT_GROUP_EXPIRY",
    "INBOX_PREFIX",
    "MAX_DEPTH",
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
    "note_unreceived",
    "pattern_regex",
    "scrub",
    "throttled",
    "topic_matches",
    "validate_group",
    "validate_pattern",
    "validate_topic",
]
