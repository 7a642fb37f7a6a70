"""Groups over time: what the bus can say about a group, and the one log line about its backlog.

A group (subscriptions sharing a group name on one pattern) is durable: what is published while
no member runs is kept and delivered when one joins, until the group has gone ``group_expiry``
seconds (`amb_core.Policy`) without any member; then it is removed with its backlog.
`MessageBus.list_groups`, `MessageBus.purge_group` and `MessageBus.delete_group` (and
``amb groups list|purge|delete``) look after groups on every adapter; docs/semantics.md, "A
group's lifetime", says how each broker keeps them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger("amb")

#: A member joining a group with at least this many messages waiting logs one INFO line.
BACKLOG_NOTICE = 1000


@dataclass(frozen=True)
class GroupInfo:
    """One group as the broker keeps it."""

    #: The group name given to `MessageBus.subscribe`.
    group: str
    #: The topic or pattern the group subscribed to (one group name on two patterns is two groups).
    pattern: str
    #: Members running now (subscriptions of any process).
    members: int
    #: Messages published to the group and not handled yet: waiting in the broker, or handed to
    #: a member that has not finished them.
    backlog: int


def note_backlog(where: str, group: str, pattern: str, waiting: int) -> None:
    """What an adapter calls when a member joins ``group`` on ``pattern`` with ``waiting``
    messages in its backlog (``where``: the broker, for the log line). Says so once, at INFO,
    from `BACKLOG_NOTICE` messages on: a worker that starts on a big backlog should not look
    stuck, and an abandoned group that was found again should not go unnoticed."""
    if waiting >= BACKLOG_NOTICE:
        logger.info(
            "group %r on %r (%s): %d messages are waiting, published while no member ran",
            group,
            pattern,
            where,
            waiting,
        )
