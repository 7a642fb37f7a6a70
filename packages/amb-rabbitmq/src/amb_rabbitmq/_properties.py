"""How an AMB message maps onto AMQP message properties.

The body is always `amb_core.adapter.encode(message)`, the truth every adapter shares. Properties
only let RabbitMQ act on what it understands natively:

- ``priority``: `MessagePriority` (0..3), honoured by queues declared with ``x-max-priority: 3``;
- ``expiration``: the message's ttl in milliseconds, so the broker drops it unread;
- ``delivery_mode``: 2 (persistent) by default, 1 for reply inboxes, which are transient anyway;
- ``message_id``: the AMB id (aiormq also uses it to match a returned, unroutable message);
- ``content_type``: `amb_core.adapter.CONTENT_TYPE`;
- header ``x-amb-attempt``: on a retried grouped message, the number of the coming attempt;
  a dead letter carries the number of attempts made, ``x-amb-queue`` (the queue it failed in)
  and ``x-amb-reason`` (why: the handler's exception, or why the bytes are not an envelope).
"""

from __future__ import annotations

import math
import time
from typing import Any

from pamqp.commands import Basic

from amb_core.adapter import CONTENT_TYPE, RESERVED_PREFIX, Message

#: ``x-max-priority`` of subscription queues: MessagePriority.URGENT. RabbitMQ keeps one
#: internal queue per level, so no more levels than the bus has.
MAX_PRIORITY = 3
ATTEMPT_HEADER = "x-amb-attempt"
QUEUE_HEADER = "x-amb-queue"
REASON_HEADER = "x-amb-reason"

_Properties = Basic.Properties
_PERSISTENT = 2
_TRANSIENT = 1


def properties_for(message: Message, persistent: bool) -> Basic.Properties:
    """The AMQP properties of ``message`` as first published."""
    fields = message.__dict__  # skips pydantic's attribute machinery on the hot path
    ttl = fields["ttl"]
    topic: str = fields["topic"]
    return _Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=_PERSISTENT if persistent and not topic.startswith(RESERVED_PREFIX) else _TRANSIENT,
        priority=int(fields["priority"]),
        message_id=fields["id"],
        expiration=None if ttl is None else _milliseconds(ttl),
    )


def properties_for_retry(
    message: Message | None, received: Basic.Properties, headers: dict[str, Any], *, keep_ttl: bool = True
) -> Basic.Properties | None:
    """The properties of ``message`` (None: bytes that were not an envelope) sent again with
    ``headers``: with what is left of its ttl, or None if nothing is (the bus would drop it
    unhandled anyway); without ``keep_ttl`` (a dead letter, kept for inspection) it never
    expires."""
    expiration = None
    if keep_ttl and message is not None and message.ttl is not None:
        remaining = message.timestamp.timestamp() + message.ttl - time.time()
        if remaining <= 0:
            return None
        expiration = _milliseconds(remaining)
    return _Properties(
        content_type=received.content_type,
        delivery_mode=received.delivery_mode,
        priority=received.priority,
        message_id=received.message_id,
        expiration=expiration,
        headers=headers,
    )


def attempt_of(received: Basic.Properties) -> int:
    """Which handler attempt a delivery is (1 for a message never retried)."""
    headers = received.headers
    if not headers:
        return 1
    attempt = headers.get(ATTEMPT_HEADER, 1)
    return attempt if isinstance(attempt, int) and attempt > 0 else 1


def _milliseconds(seconds: float) -> str:
    # Rounded up, so a tiny ttl never becomes 0 ("expire at once unless a consumer is waiting").
    return str(max(1, math.ceil(seconds * 1000)))
