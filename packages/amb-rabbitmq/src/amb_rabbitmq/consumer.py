"""One subscription's queue and consumer: declare, bind, consume, and hand each delivery to the
bus with a `RabbitMQDelivery` (how the bus's decision is carried out: see delivery.py).

Acknowledgements are manual and sent after the handler (the bus settles each delivery once),
so the prefetch limit is also the bound on what the process holds for a subscription: the
excess waits in the broker, in priority order. Every delivery is settled, whatever its bytes:
one that is not a valid envelope is logged and acknowledged (ungrouped) or dead-lettered
(groups) by the bus beside the queue, so a flood of them can never fill the prefetch window.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import aiormq.exceptions
from aio_pika.abc import AbstractQueue
from aiormq.abc import DeliveredMessage
from pamqp.common import FieldTable

from amb_core.adapter import (
    DEFAULT_GROUP_EXPIRY,
    InvalidMessageError,
    Message,
    Subscription,
    decode,
    note_backlog,
)
from amb_rabbitmq.acks import Acknowledger
from amb_rabbitmq.delivery import RabbitMQDelivery
from amb_rabbitmq.groups import GroupRegistry, expires_ms
from amb_rabbitmq.naming import Names
from amb_rabbitmq.properties import MAX_PRIORITY, attempt_of
from amb_rabbitmq.quiet import not_ours
from amb_rabbitmq.session import Session

logger = logging.getLogger("amb")


class Consumer:
    """Feeds one `Subscription` from its queue, on the session it was last started on.

    Queues: an ungrouped subscription or a reply inbox has an exclusive, auto-delete queue of its
    own (it goes when the consumer or the connection does); a group shares a durable queue that
    outlives its members, so nothing is lost while none is connected.
    """

    __slots__ = (
        "_backlog",
        "_decode",
        "_expiry",
        "_registry",
        "_tag",
        "acks",
        "active",
        "binding_exchange",
        "channel",
        "grouped",
        "names",
        "prefetch",
        "queue",
        "session",
        "subscription",
        "unacked",
    )

    def __init__(
        self,
        subscription: Subscription,
        names: Names,
        prefetch: int,
        registry: GroupRegistry | None = None,
        group_expiry: float = DEFAULT_GROUP_EXPIRY,
    ) -> None:
        self.subscription = subscription
        self._registry = registry
        self._expiry = group_expiry
        self.names = names
        self.queue = names.queue_for(subscription)
        self.binding_exchange = names.exchange_for(subscription.pattern)
        self.grouped = subscription.group is not None and not subscription.is_inbox
        self.prefetch = prefetch
        self.active = True
        #: The session and aiormq channel of the current consumer, and that channel's
        #: acknowledgements (set by `start`; read by `RabbitMQDelivery`).
        self.session: Session | None = None
        self.channel: object = None
        self.acks: Acknowledger = None  # type: ignore[assignment]  # set by start, before any delivery
        self._decode: Callable[[bytes], Message] = decode
        self._tag: str | None = None
        #: Delivery tags handed to the bus and not settled yet; released on unsubscribe.
        self.unacked: set[int] = set()
        # Messages waiting for room in the subscription's local queue, in arrival order.
        self._backlog: deque[tuple[Message, RabbitMQDelivery]] = deque()

    @property
    def consumer_tag(self) -> str | None:
        return self._tag

    def is_current(self, session: Session) -> bool:
        """Whether the consumer runs on ``session``."""
        return self.session is session and self._tag is not None

    async def start(self, session: Session) -> None:
        """Declare and bind the queue, then consume from it. Once this returns, a message
        published to a matching topic reaches the subscription."""
        inbox = self.subscription.is_inbox
        setup = await session.setup_channel()
        if self.grouped:
            queue = await self._declare_group_queue(session)
        else:
            queue = await setup.declare_queue(
                self.queue,
                exclusive=True,
                auto_delete=True,
                arguments=None if inbox else {"x-max-priority": MAX_PRIORITY},
            )
        await queue.bind(self.binding_exchange, self.subscription.pattern)
        channel = session.consume
        # Set before consuming: a queue with messages waiting delivers them right after
        # ConsumeOk, possibly before this coroutine resumes.
        if self.session is not session:  # what was outstanding went with the old connection
            self.unacked = set()
            self._backlog = deque()
        self.session, self.channel, self.acks, self._tag = session, channel, session.acks, None
        self._decode = session.decoder.decode
        if inbox:
            # Replies resolve a waiting request at once; nothing to acknowledge or bound.
            ok = await channel.basic_consume(self.queue, self._on_reply, no_ack=True)
        else:
            await channel.basic_qos(prefetch_count=self.prefetch)
            ok = await channel.basic_consume(self.queue, self._on_message)
        self._tag = ok.consumer_tag

    async def _declare_group_queue(self, session: Session) -> AbstractQueue:
        """The group's durable queue, which RabbitMQ removes with its backlog once it has had no
        consumer for ``group_expiry`` (``x-expires``). A queue AMB declared before with another
        expiry, or none (before group expiry existed), is used as it is, with a WARNING: it
        keeps the expiry it has. Any other difference is refused (`BrokerRefusedError`)."""
        group, pattern = self.subscription.group, self.subscription.pattern
        assert group is not None
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
        if self._registry is not None:
            await self._registry.note(await session.setup_channel(), group, pattern, self._expiry, None)
        return queue

    async def stop(self) -> None:
        """Cancel the consumer. The exclusive queue of an ungrouped subscription goes with it
        (auto-delete); a group's queue stays for the other members."""
        self.active = False
        session, tag = self.session, self._tag
        if session is None or tag is None or not session.is_open:
            return
        channel = session.consume
        if channel is self.channel and not channel.is_closed:
            await channel.basic_cancel(tag)

    async def release(self) -> None:
        """After `stop`: once the subscription's handlers are done, hand back to the broker what
        the bus received but never handled (the bus releases what it had queued itself; this
        covers what arrived while the consumer was being cancelled), so another member of the
        group gets it now rather than when this connection closes."""
        await asyncio.sleep(0)  # the bus closes the subscription right after `stop` returns
        await self.subscription.drain()
        session, unacked = self.session, self.unacked
        if session is None or not unacked or not session.is_open or session.consume is not self.channel:
            return
        self.unacked = set()
        for tag in sorted(unacked):
            session.acks.nack(tag, requeue=self.grouped)

    # ------------------------------------------------------------------ deliveries

    async def _on_reply(self, delivered: DeliveredMessage) -> None:
        # Not through the shared decoder: a reply has exactly one recipient.
        self.subscription.receive(delivered.body, delivered.routing_key or self.queue)

    async def _on_message(self, delivered: DeliveredMessage) -> None:
        if delivered.channel is not self.channel:
            return  # a straggler from a closed channel: the broker has requeued it
        not_ours()  # this task goes on into user code (see amb_rabbitmq.quiet)
        tag: int = delivered.delivery_tag  # type: ignore[assignment]  # always set on a delivery
        self.acks.track(tag)  # first, before any await: see Acknowledger
        properties = delivered.header.properties
        attempt = attempt_of(properties) if properties.headers else 1
        try:
            message = self._decode(delivered.body)
        except InvalidMessageError as error:
            # Settled beside the queue (logged, then acknowledged or dead-lettered): never
            # blocks the deliveries behind it.
            delivery = RabbitMQDelivery(self, delivered, tag, None, attempt)
            self.subscription.reject(delivered.routing_key or self.queue, error, delivery)
            return
        self.unacked.add(tag)
        if not self.active:
            return  # arrived while the consumer was being cancelled: `release` requeues it
        delivery = RabbitMQDelivery(self, delivered, tag, message, attempt)
        if self._backlog or not self.subscription.offer(message, delivery):
            await self._wait_for_room(message, delivery)

    async def _wait_for_room(self, message: Message, delivery: RabbitMQDelivery) -> None:
        # Deliveries arrive as separate tasks; a queue of our own keeps them in order while the
        # subscription's local queue is full (only when prefetch exceeds the bus's queue_size).
        backlog = self._backlog
        backlog.append((message, delivery))
        if len(backlog) > 1:
            return  # the task that found the queue full is feeding the backlog
        while backlog:
            await self.subscription.deliver(*backlog[0])
            backlog.popleft()


def _about_expiry(error: BaseException) -> bool:
    """Whether a PRECONDITION_FAILED answer to a queue declaration is about ``x-expires``."""
    return "'x-expires'" in str(error)
