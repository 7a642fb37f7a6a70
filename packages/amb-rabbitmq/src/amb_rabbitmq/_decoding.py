"""Decoding deliveries, once per message per connection.

When several subscriptions of one bus match a topic, RabbitMQ delivers a copy of the message to
each of their queues over the same connection. Decoding (validating) the envelope is the
largest part of what the process does per delivery, so copies that arrive close together are
decoded once and the subscriptions share the immutable `Message`, exactly as subscribers share
one in memory (docs/semantics.md: treat ``msg.payload`` as read-only).
"""

from __future__ import annotations

from amb_core.adapter import Message, decode

#: Bodies remembered; copies of one message arrive within a few deliveries of each other.
_RECENT = 32
#: Larger bodies are not remembered: hashing them would cost more than it saves on a miss.
_MAX_BODY = 64 * 1024


class SharedDecoder:
    """`amb_core.adapter.decode` with a small memory of recently decoded bodies. What is not a
    valid envelope raises `InvalidMessageError` each time: each subscription settles its copy."""

    __slots__ = ("_recent",)

    def __init__(self) -> None:
        self._recent: dict[bytes, Message] = {}

    def decode(self, body: bytes) -> Message:
        """The message in ``body``; `InvalidMessageError` for anything else."""
        if len(body) > _MAX_BODY:
            return decode(body)
        recent = self._recent
        message = recent.get(body)
        if message is not None:
            return message
        message = decode(body)
        if len(recent) >= _RECENT:
            del recent[next(iter(recent))]
        recent[body] = message
        return message
