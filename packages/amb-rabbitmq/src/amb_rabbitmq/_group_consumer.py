"""A grouped subscription on RabbitMQ: one member of a group, consuming the durable queue the
group's members share, which outlives them so that nothing is lost while none is connected."""

from __future__ import annotations

import logging
import time

import aiormq.exceptions
from aio_pika.abc import AbstractQueue
from pamqp.common import FieldTable

from amb_core.adapter import Subscription, note_backlog
from amb_rabbitmq._consumer import QueueConsumer
from amb_rabbitmq._errors import CLIENT_ERRORS
from amb_rabbitmq._group_registry import GroupRegistry, expires_ms
from amb_rabbitmq._naming import Names
from amb_rabbitmq._properties import MAX_PRIORITY
from amb_rabbitmq._session import Session

logger = logging.getLogger("amb")


class GroupConsumer(QueueConsumer):
    """Feeds a grouped subscription from its group's queue, and keeps the group registry
    (`amb_rabbitmq._group_registry`) told when the group has members."""

    __slots__ = ("_expiry", "_registry", "group")

    grouped = True

    def __init__(
        self,
        subscription: Subscription,
        names: Names,
        prefetch: int,
        registry: GroupRegistry,
        group_expiry: float,
    ) -> None:
        group = subscription.group
        assert group is not None
        super().__init__(subscription, names, names.group_queue(group, subscription.pattern), prefetch)
        self.group = group
        self._registry = registry
        self._expiry = group_expiry

    async def _declare(self, session: Session) -> AbstractQueue:
        """The group's durable queue, which RabbitMQ removes with its backlog once it has had no
        consumer for ``group_expiry`` (``x-expires``). A queue AMB declared before with another
        expiry, or none (before group expiry existed), is used as it is, with a WARNING: it
        keeps the expiry it has. Any other difference is refused (`BrokerRefusedError`)."""
        group, pattern = self.group, self.subscription.pattern
        priority: FieldTable = {"x-max-priority": MAX_PRIORITY}
        arguments: FieldTable = {**priority, "x-expires": expires_ms(self._expiry)}
        try:
            queue = await (await session.setup_channel()).declare_queue(
                self.queue, durable=True, arguments=arguments
            )
        except aiormq.exceptions.ChannelPreconditionFailed as error:
            if not _about_expiry(error):
                raise
            try:  # declared by an AMB without group expiry?
                queue = await (await session.setup_channel()).declare_queue(
                    self.queue, durable=True, arguments=priority
                )
            except aiormq.exceptions.ChannelPreconditionFailed as other:
                if not _about_expiry(other):
                    raise
                queue = await (await session.setup_channel()).declare_queue(self.queue, passive=True)
            logger.warning(
                "group %r on %r: its queue %s was declared with another x-expires than this bus's "
                "group_expiry (%s s) gives, or none: it keeps that. Delete the group (amb groups "
                "delete) while no member runs to have it declared again",
                group,
                pattern,
                self.queue,
                self._expiry,
            )
        first = self.session is None
        if first:
            note_backlog(
                session.boundary.name, group, pattern, int(queue.declaration_result.message_count or 0)
            )
        await self._registry.note(await session.setup_channel(), group, pattern, self._expiry, None)
        return queue

    async def note_left(self, session: Session | None) -> None:
        """This member left: if it was the last, the registry learns since when the group has
        had none (`amb_rabbitmq._group_registry`)."""
        if session is None:
            return
        group, pattern = self.group, self.subscription.pattern
        try:
            counts = await self._registry.counts(await session.setup_channel(), group, pattern)
            if counts is not None and counts[0] == 0:
                await self._registry.note(
                    await session.setup_channel(), group, pattern, self._expiry, time.time()
                )
        except CLIENT_ERRORS as error:
            logger.debug("could not note that group %r on %r has no member: %r", group, pattern, error)


def _about_expiry(error: BaseException) -> bool:
    """Whether a PRECONDITION_FAILED answer to a queue declaration is about ``x-expires``."""
    return "'x-expires'" in str(error)
