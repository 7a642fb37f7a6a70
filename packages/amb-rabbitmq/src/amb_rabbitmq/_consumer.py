"""What every subscription's consumer does: declare its queue, bind it, consume from it, and
hand each delivery to the bus with a `RabbitMQDelivery` (how the bus's decision is carried out:
see _delivery.py). Which queue, and how it is consumed, is each role's: `GroupConsumer`
(_group_consumer.py), `FanoutReader` (_fanout.py), `ReplyInbox` (_reply_inbox.py).

Acknowledgements are manual and sent after the handler (the bus settles each delivery once),
so the prefetch limit is also the bound on what the process holds for a subscription: the
excess waits in the broker, in priority order. Every delivery is settled, whatever its bytes:
one that is not a valid envelope is logged and acknowledged (ungrouped) or dead-lettered
(groups) by the bus beside the queue, so a flood of them can never fill the prefetch window.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import ClassVar

import aiormq
from aio_pika.abc import AbstractQueue
from aiormq.abc import DeliveredMessage

from amb_core.adapter import InvalidMessageError, Message, Subscription, decode
from amb_rabbitmq._acks import Acknowledger
from amb_rabbitmq._delivery import RabbitMQDelivery
from amb_rabbitmq._naming import Names
from amb_rabbitmq._properties import attempt_of
from amb_rabbitmq._quiet import not_ours
from amb_rabbitmq._session import Session


class QueueConsumer(ABC):
    """Feeds one `Subscription` from its ``queue``, on the session it was last started on."""

    __slots__ = (
        "_backlog",
        "_decode",
        "_tag",
        "acks",
        "active",
        "binding_exchange",
        "channel",
        "names",
        "prefetch",
        "queue",
        "session",
        "subscription",
        "unacked",
    )

    #: Whether the queue is a group's, shared with its other members: a released delivery goes
    #: back to it for one of them (an ungrouped subscription's queue goes away with it).
    grouped: ClassVar[bool] = False

    def __init__(self, subscription: Subscription, names: Names, queue: str, prefetch: int) -> None:
        self.subscription = subscription
        self.names = names
        self.queue = queue
        self.binding_exchange = names.exchange_for(subscription.pattern)
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
        queue = await self._declare(session)
        await queue.bind(self.binding_exchange, self.subscription.pattern)
        channel = session.consume
        # Set before consuming: a queue with messages waiting delivers them right after
        # ConsumeOk, possibly before this coroutine resumes.
        if self.session is not session:  # what was outstanding went with the old connection
            self.unacked = set()
            self._backlog = deque()
        self.session, self.channel, self.acks, self._tag = session, channel, session.acks, None
        self._decode = session.decoder.decode
        self._tag = await self._consume(channel)

    @abstractmethod
    async def _declare(self, session: Session) -> AbstractQueue:
        """Declare the queue on ``session`` (again, after a reconnect)."""

    async def _consume(self, channel: aiormq.Channel) -> str:
        """Start consuming the queue on ``channel``; the consumer tag. Deliveries are
        acknowledged after the handler, at most ``prefetch`` outstanding."""
        await channel.basic_qos(prefetch_count=self.prefetch)
        ok = await channel.basic_consume(self.queue, self._on_message)
        return ok.consumer_tag  # type: ignore[return-value]  # always set on ConsumeOk

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

    async def _on_message(self, delivered: DeliveredMessage) -> None:
        if delivered.channel is not self.channel:
            return  # a straggler from a closed channel: the broker has requeued it
        not_ours()  # this task goes on into user code (see amb_rabbitmq._quiet)
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
