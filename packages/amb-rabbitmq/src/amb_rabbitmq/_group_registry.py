"""Groups over time on RabbitMQ: each group's queue expires, and a registry lists them.

A group's queue is declared with ``x-expires`` = ``group_expiry``: RabbitMQ deletes it, with its
backlog, once it has gone that long without a consumer (and without being declared again).

AMQP 0-9-1 cannot enumerate queues (only the management plugin's HTTP API can), so the adapter
keeps a registry of its own: the durable queue ``<prefix>.groups``, holding one small JSON
record per group event (``{"group", "pattern", "expiry", "empty_since"}``): a member joining
writes one, the last member leaving writes one with the time. `GroupRegistry.list` reads all of
them, keeps the newest per group, looks each group's queue up (passive ``queue.declare``: members
and waiting messages), and writes the compacted set back before acknowledging what it read.

A passive declare renews the queue's ``x-expires`` lease as a real one does, so a group that is
listed now and then would never expire by RabbitMQ alone: `list` removes a group itself once its
registry says it has had no member for its ``group_expiry``. Two processes listing at the same
instant each see part of the registry (each holds the records it read until it has written them
back): list from one place at a time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractQueue

from amb_core.adapter import GroupInfo, GroupInUseError
from amb_rabbitmq._naming import Names

logger = logging.getLogger("amb")

_MISSING = (aiormq.exceptions.ChannelNotFoundEntity,)

#: Returns the declarations channel, reopened if the broker closed it (a lookup of a queue
#: that is gone does).
Reopen = Callable[[], Awaitable[AbstractChannel]]


def expires_ms(group_expiry: float) -> int:
    """``group_expiry`` as RabbitMQ's ``x-expires`` (whole milliseconds, at least 1)."""
    return max(1, round(group_expiry * 1000))


class GroupRegistry:
    """The registry of one prefix's groups (see the module docstring)."""

    def __init__(self, names: Names) -> None:
        self._names = names
        self.queue = names.group_registry

    async def note(
        self, channel: AbstractChannel, group: str, pattern: str, expiry: float, empty_since: float | None
    ) -> None:
        """Record that ``group`` on ``pattern`` has a member now (``empty_since`` None) or has had
        none since then."""
        record = {"group": group, "pattern": pattern, "expiry": expiry, "empty_since": empty_since}
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(record).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=self.queue,
        )

    async def _lookup(self, channel: AbstractChannel, group: str, pattern: str) -> AbstractQueue | None:
        """The group's queue; None if there is none (the broker then closes ``channel``).
        Renews the queue's ``x-expires`` lease."""
        try:
            return await channel.declare_queue(self._names.group_queue(group, pattern), passive=True)
        except _MISSING:
            return None

    async def counts(self, channel: AbstractChannel, group: str, pattern: str) -> tuple[int, int] | None:
        """(members, waiting messages) of the group's queue; None if there is no such queue."""
        queue = await self._lookup(channel, group, pattern)
        if queue is None:
            return None
        result = queue.declaration_result
        return int(result.consumer_count or 0), int(result.message_count or 0)

    async def list(self, reader: AbstractChannel, reopen: Reopen) -> list[GroupInfo]:
        """Every registered group, after removing those that went ``group_expiry`` without a
        member. The registry is read on ``reader``, a channel of its own (closing it hands back
        what was read and not yet acknowledged); ``reopen()`` returns the declarations channel,
        reopened if a lookup of a queue that is gone closed it."""
        queue = await reader.declare_queue(self.queue, durable=True)
        newest: dict[tuple[str, str], dict[str, Any]] = {}
        last = None
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            last = message
            try:
                record = json.loads(message.body)
                newest[(record["group"], record["pattern"])] = record
            except (ValueError, KeyError, TypeError):
                logger.warning("skipped a record of %s that AMB did not write", self.queue)
        now = time.time()
        found: list[GroupInfo] = []
        keep: list[dict[str, Any]] = []
        for (group, pattern), record in newest.items():
            empty_since, expiry = record.get("empty_since"), float(record.get("expiry") or 0)
            if empty_since is not None and expiry and now - float(empty_since) >= expiry:
                try:
                    await (await reopen()).queue_delete(
                        self._names.group_queue(group, pattern), if_unused=True
                    )
                    logger.info(
                        "removed group %r on %r: no member for %s s (group_expiry)", group, pattern, expiry
                    )
                    continue
                except aiormq.exceptions.ChannelPreconditionFailed:
                    empty_since = None  # a member joined just now
            counts = await self.counts(await reopen(), group, pattern)
            if counts is None:
                continue  # expired by RabbitMQ, or deleted
            members, waiting = counts
            if members:
                empty_since = None
            elif empty_since is None:
                empty_since = now  # its members died without leaving: from now on
            keep.append({**record, "empty_since": empty_since})
            found.append(GroupInfo(group, pattern, members, waiting))
        channel = await reopen()
        for record in keep:
            await self.note(
                channel, record["group"], record["pattern"], record["expiry"], record["empty_since"]
            )
        if last is not None:
            await last.ack(multiple=True)
        return sorted(found, key=lambda info: (info.group, info.pattern))

    async def purge(self, channel: AbstractChannel, group: str, pattern: str) -> int:
        queue = await self._lookup(channel, group, pattern)
        if queue is None:
            return 0
        result = await queue.purge()
        return int(result.message_count or 0)

    async def delete(self, reopen: Reopen, group: str, pattern: str) -> bool:
        counts = await self.counts(await reopen(), group, pattern)
        if counts is None:
            return False
        if counts[0]:
            raise _in_use(group, pattern, counts[0])
        try:
            await (await reopen()).queue_delete(self._names.group_queue(group, pattern), if_unused=True)
        except aiormq.exceptions.ChannelPreconditionFailed:
            raise _in_use(group, pattern, 1) from None
        return True


def _in_use(group: str, pattern: str, members: int) -> GroupInUseError:
    return GroupInUseError(
        f"group {group!r} on {pattern!r} has {members} running members: stop them before deleting it"
    )
