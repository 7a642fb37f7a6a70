"""Where things live on the broker: exchange and queue names derived from one prefix.

With the default prefix ``amb``:

- ``amb`` (topic, durable): every ordinary topic; a topic is the routing key unchanged.
- ``amb.reserved`` (topic, durable): topics under ``_amb.`` (reply inboxes). They travel apart
  so that a binding such as ``#`` or ``*.*.*`` on ``amb`` never sees them, as docs/semantics.md
  requires of patterns that start with a wildcard.
- ``amb.sub.<subscription id>``: an ungrouped subscription's exclusive, auto-delete queue.
- ``amb.group.<group>.<pattern>``: a group's shared durable queue. ``*`` in the pattern is
  written ``@`` (AMQP clients refuse ``*`` in queue names; no topic contains ``@``).
- ``amb.groups`` (durable): the registry of groups that lets them be listed (see _group_registry.py).
- ``amb.inbox.<subscription id>``: a bus's reply inbox, exclusive and auto-delete.
- ``amb.dlx`` (topic, durable) and ``amb.dlq`` (durable, bound with ``#``): where a grouped
  message goes after ``max_attempts`` failed handler calls, under its original topic.
"""

from __future__ import annotations

import hashlib

from amb_core.adapter import RESERVED_PREFIX

#: AMQP's limit on a queue name, in bytes (all our names are ASCII).
_MAX_QUEUE_NAME = 255


class Names:
    """The names of one application's exchanges and queues."""

    __slots__ = (
        "dead_letter_exchange",
        "dead_letter_queue",
        "exchange",
        "group_registry",
        "prefix",
        "reserved_exchange",
    )

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.exchange = prefix
        self.reserved_exchange = f"{prefix}.reserved"
        self.dead_letter_exchange = f"{prefix}.dlx"
        self.dead_letter_queue = f"{prefix}.dlq"
        self.group_registry = f"{prefix}.groups"

    def exchange_for(self, topic: str) -> str:
        """The exchange a message on ``topic`` is published to."""
        return self.reserved_exchange if topic.startswith(RESERVED_PREFIX) else self.exchange

    def fanout_queue(self, subscription_id: str) -> str:
        """The exclusive queue of the ungrouped subscription ``subscription_id``."""
        return f"{self.prefix}.sub.{subscription_id}"

    def inbox_queue(self, subscription_id: str) -> str:
        """The exclusive queue of the reply inbox ``subscription_id``."""
        return f"{self.prefix}.inbox.{subscription_id}"

    def group_queue(self, group: str, pattern: str) -> str:
        """The durable queue group ``group`` on ``pattern`` shares."""
        return _fit(f"{self.prefix}.group.{group}.{pattern.replace('*', '@')}")


def _fit(name: str) -> str:
    """``name``, or when it is too long for AMQP, its start and a digest of the whole (still
    unique per group and pattern, and the same on every bus that computes it)."""
    if len(name) <= _MAX_QUEUE_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    return f"{name[: _MAX_QUEUE_NAME - len(digest) - 1]}:{digest}"
