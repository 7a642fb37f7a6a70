"""One subscription's queue and consumer: declare, bind, consume, acknowledge, retry, dead-letter.

Acknowledgements are manual and sent after the handler (the bus calls ``ack`` once per
message), so the prefetch limit is also the bound on what the process holds for a subscription:
the excess waits in the broker, in priority order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from aiormq.abc import DeliveredMessage

from amb_core.message import Message
from amb_core.subscription import Ack, Subscription
from amb_core.wire import decode_or_log
from amb_rabbitmq.acks import Acknowledger
from amb_rabbitmq.naming import Names
from amb_rabbitmq.properties import (
    ATTEMPT_HEADER,
    MAX_PRIORITY,
    QUEUE_HEADER,
    attempt_of,
    properties_for_retry,
)
from amb_rabbitmq.session import Session

logger = logging.getLogger("amb")


class Consumer:
    """Feeds one `Subscription` from its queue, on the session it was last started on.

    Queues: an ungrouped subscription or a reply inbox has an exclusive, auto-delete queue of its
    own (it goes when the consumer or the connection does); a group shares a durable queue that
    outlives its members, so nothing is lost while none is connected.
    """

    __slots__ = (
        "_acks",
        "_backlog",
        "_channel",
        "_decode",
        "_max_attempts",
        "_session",
        "_tag",
        "_unacked",
        "active",
        "binding_exchange",
        "grouped",
        "names",
        "prefetch",
        "queue",
        "subscription",
    )

    def __init__(self, subscription: Subscription, names: Names, prefetch: int, max_attempts: int) -> None:
        self.subscription = subscription
        self.names = names
        self.queue = names.queue_for(subscription)
        self.binding_exchange = names.exchange_for(subscription.pattern)
        self.grouped = subscription.group is not None and not subscription.is_inbox
        self.prefetch = prefetch
        self._max_attempts = max_attempts
        self.active = True
        self._session: Session | None = None
        self._channel: object = None  # the aiormq channel of the current consumer
        self._acks: Acknowledger | None = None
        self._decode: Callable[[bytes, str], Message | None] = decode_or_log
        self._tag: str | None = None
        # Delivery tags handed to the bus and not settled yet; released on unsubscribe.
        self._unacked: set[int] = set()
        # Messages waiting for room in the subscription's local queue, in arrival order.
        self._backlog: deque[tuple[Message, Ack]] = deque()

    @property
    def consumer_tag(self) -> str | None:
        return self._tag

    def is_current(self, session: Session) -> bool:
        """Whether the consumer runs on ``session``."""
        return self._session is session and self._tag is not None

    async def start(self, session: Session) -> None:
        """Declare and bind the queue, then consume from it. Once this returns, a message
        published to a matching topic reaches the subscription."""
        inbox = self.subscription.is_inbox
        setup = await session.setup_channel()
        queue = await setup.declare_queue(
            self.queue,
            durable=self.grouped,
            exclusive=not self.grouped,
            auto_delete=not self.grouped,
            arguments=None if inbox else {"x-max-priority": MAX_PRIORITY},
        )
        await queue.bind(self.binding_exchange, self.subscription.pattern)
        channel = session.consume
        # Set before consuming: a queue with messages waiting delivers them right after
        # ConsumeOk, possibly before this coroutine resumes.
        if self._session is not session:  # what was outstanding went with the old connection
            self._unacked = set()
            self._backlog = deque()
        self._session, self._channel, self._acks, self._tag = session, channel, session.acks, None
        self._decode = session.decoder.decode
        if inbox:
            # Replies resolve a waiting request at once; nothing to acknowledge or bound.
            ok = await channel.basic_consume(self.queue, self._on_reply, no_ack=True)
        else:
            await channel.basic_qos(prefetch_count=self.prefetch)
            ok = await channel.basic_consume(self.queue, self._on_message)
        self._tag = ok.consumer_tag

    async def stop(self) -> None:
        """Cancel the consumer. The exclusive queue of an ungrouped subscription goes with it
        (auto-delete); a group's queue stays for the other members."""
        self.active = False
        session, tag = self._session, self._tag
        if session is None or tag is None or not session.is_open:
            return
        channel = session.consume
        if channel is self._channel and not channel.is_closed:
            await channel.basic_cancel(tag)

    async def release(self) -> None:
        """After `stop`: once the subscription's handlers are done, hand back to the broker what
        the bus received but never handled (it drops its local queue on unsubscribe), so
        another member of the group gets it now rather than when this connection closes."""
        await asyncio.sleep(0)  # the bus closes the subscription right after `stop` returns
        await self.subscription.drain()
        session, unacked = self._session, self._unacked
        if session is None or not unacked or not session.is_open or session.consume is not self._channel:
            return
        self._unacked = set()
        for tag in sorted(unacked):
            session.acks.nack(tag, requeue=self.grouped)

    # ------------------------------------------------------------------ deliveries

    async def _on_reply(self, delivered: DeliveredMessage) -> None:
        # Not through the shared decoder: a reply has exactly one recipient.
        message = decode_or_log(delivered.body, delivered.routing_key or self.queue)
        if message is not None:
            self.subscription.offer(message)

    async def _on_message(self, delivered: DeliveredMessage) -> None:
        channel = delivered.channel
        if channel is not self._channel:
            return  # a straggler from a closed channel: the broker has requeued it
        tag: int = delivered.delivery_tag  # type: ignore[assignment]  # always set on a delivery
        acks = self._acks
        assert acks is not None
        acks.track(tag)  # first, before any await: see Acknowledger
        message = self._decode(delivered.body, delivered.routing_key or self.queue)
        if message is None:
            # Acknowledged so that it does not come back; decode_or_log has logged it.
            acks.ack(tag)
            return
        self._unacked.add(tag)
        if not self.active:
            return  # arrived while the consumer was being cancelled: `release` requeues it

        async def ack(ok: bool) -> None:
            await self._settle(delivered, tag, message, ok)

        if self._backlog or not self.subscription.offer(message, ack):
            await self._wait_for_room(message, ack)

    async def _wait_for_room(self, message: Message, ack: Ack) -> None:
        # Deliveries arrive as separate tasks; a queue of our own keeps them in order while the
        # subscription's local queue is full (only when prefetch exceeds the bus's queue_size).
        backlog = self._backlog
        backlog.append((message, ack))
        if len(backlog) > 1:
            return  # the task that found the queue full is feeding the backlog
        while backlog:
            await self.subscription.deliver(*backlog[0])
            backlog.popleft()

    async def _settle(self, delivered: DeliveredMessage, tag: int, message: Message, ok: bool) -> None:
        channel = delivered.channel
        if channel is not self._channel or channel.is_closed:
            # The connection was lost since: the broker has already requeued the message.
            logger.debug(
                "message %s was settled after its channel closed; the broker redelivers it", message.id
            )
            return
        self._unacked.discard(tag)
        if ok or not self.grouped:
            # Ungrouped subscriptions are broadcast signals: each message is seen once.
            self._acks.ack(tag)  # type: ignore[union-attr]  # set with the channel
            return
        await self._retry_or_dead_letter(delivered, tag, message)

    async def _retry_or_dead_letter(self, delivered: DeliveredMessage, tag: int, message: Message) -> None:
        """Classic queues do not count redeliveries, so attempts travel in a header: the message
        is published again (to this queue only, through the default exchange) with the next
        attempt number, or to the dead-letter exchange after the last one, and only then is the
        original acknowledged. A crash in between yields a duplicate, never a loss."""
        session = self._session
        assert session is not None
        received = delivered.header.properties
        attempt = attempt_of(received)
        names = self.names
        if attempt < self._max_attempts:
            properties = properties_for_retry(message, received, {ATTEMPT_HEADER: attempt + 1})
            if properties is None:
                logger.debug("message %s expired after failed attempt %d", message.id, attempt)
            elif await session.publish_confirmed(delivered.body, "", self.queue, properties):
                logger.info(
                    "message %s failed attempt %d of %d in %s; it will be delivered again",
                    message.id,
                    attempt,
                    self._max_attempts,
                    self.queue,
                )
            else:
                logger.error("message %s could not be retried: queue %s is gone", message.id, self.queue)
        else:
            properties = properties_for_retry(
                message, received, {ATTEMPT_HEADER: attempt, QUEUE_HEADER: self.queue}, keep_ttl=False
            )
            assert properties is not None  # without keep_ttl there is always a result
            if await session.publish_confirmed(
                delivered.body, names.dead_letter_exchange, message.topic, properties
            ):
                logger.warning(
                    "message %s on %s failed %d attempts in %s; dead-lettered to exchange %s (queue %s)",
                    message.id,
                    message.topic,
                    attempt,
                    self.queue,
                    names.dead_letter_exchange,
                    names.dead_letter_queue,
                )
            else:
                logger.error(
                    "message %s on %s failed %d attempts and was dropped: nothing is bound to the"
                    " dead-letter exchange %s (queue %s was deleted?)",
                    message.id,
                    message.topic,
                    attempt,
                    names.dead_letter_exchange,
                    names.dead_letter_queue,
                )
        session.acks.ack(tag)
