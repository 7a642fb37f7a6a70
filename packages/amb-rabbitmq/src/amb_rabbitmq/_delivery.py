"""`RabbitMQDelivery`: the bus's decision about one delivery, mapped onto RabbitMQ.

- ack: ``basic.ack``, coalesced with the channel's other acknowledgements
  (`amb_rabbitmq._acks.Acknowledger`).
- retry: classic queues do not count redeliveries, so attempts travel in the ``x-amb-attempt``
  header: the message is published again to its own queue only (through the default
  exchange), as attempt + 1, with what is left of its ttl, and the original is acknowledged
  once the broker confirmed the copy.
- dead_letter: published to the dead-letter exchange (``amb.dlx``) under its original topic,
  with headers ``x-amb-attempt``, ``x-amb-queue`` and ``x-amb-reason``, without expiry, then
  acknowledged. The durable queue ``amb.dlq`` is bound to it with ``#``.
- release: ``basic.nack`` with requeue (a group's queue keeps it for another member); an
  ungrouped subscription's queue is going away with it, so it is dropped there.

A crash between the copy and the acknowledgement gives a duplicate, never a loss. A delivery
whose channel closed since (its connection was lost) is not settled at all: the broker has
already put it back in its queue, uncounted, which is what an interrupted delivery must be.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from amb_core.adapter import Delivery, Message, message_fields
from amb_rabbitmq._errors import CLIENT_ERRORS
from amb_rabbitmq._properties import ATTEMPT_HEADER, QUEUE_HEADER, REASON_HEADER, properties_for_retry

if TYPE_CHECKING:
    from amb_rabbitmq._consumer import QueueConsumer

logger = logging.getLogger("amb.rabbitmq")

#: How much of a reason goes into the ``x-amb-reason`` header: headers travel in one frame
#: with the message, and a traceback-sized text is plenty.
_MAX_REASON = 1000


class RabbitMQDelivery(Delivery):
    """One delivery of a consumer's queue. ``message`` is None for bytes that were not a valid
    envelope (they are only ever acknowledged or dead-lettered)."""

    __slots__ = ("_consumer", "_delivered", "_message", "_tag")

    def __init__(
        self,
        consumer: QueueConsumer,
        delivered: DeliveredMessage,
        tag: int,
        message: Message | None,
        attempt: int,
    ) -> None:
        self.attempt = attempt
        self._consumer = consumer
        self._delivered = delivered
        self._tag = tag
        self._message = message

    def _current(self) -> bool:
        """Whether the delivery can still be settled: its channel is the consumer's and open."""
        consumer = self._consumer
        channel = self._delivered.channel
        if channel is consumer.channel and not channel.is_closed:
            consumer.unacked.discard(self._tag)
            return True
        logger.debug(
            "delivery %d of %s was settled after its channel closed; the broker redelivers it",
            self._tag,
            consumer.queue,
        )
        return False

    async def ack(self) -> None:
        if self._current():
            self._consumer.acks.ack(self._tag)

    async def release(self) -> None:
        if self._current():
            self._consumer.acks.nack(self._tag, requeue=self._consumer.grouped)

    async def retry(self) -> None:
        message = self._message
        assert message is not None  # only a handler's failure is retried
        if not self._current():
            return
        consumer = self._consumer
        properties = properties_for_retry(
            message, self._delivered.header.properties, {ATTEMPT_HEADER: self.attempt + 1}
        )
        if properties is None:
            logger.debug("message %s expired after failed attempt %d", message.id, self.attempt)
        else:
            routed = await self._republish(
                "", consumer.queue, properties, f"redelivering message {message.id}"
            )
            if routed is None:
                return
            if not routed:
                logger.error(
                    "message %s could not be retried: queue %s is gone",
                    message.id,
                    consumer.queue,
                    extra=message_fields(message),
                )
        consumer.acks.ack(self._tag)

    async def dead_letter(self, reason: str) -> str:
        consumer = self._consumer
        names = consumer.names
        where = f"exchange {names.dead_letter_exchange} (queue {names.dead_letter_queue})"
        lost = "nowhere yet: the connection was lost, and RabbitMQ delivers it again"
        if not self._current():
            return lost
        received = self._delivered.header.properties
        headers = {
            **(received.headers or {}),
            ATTEMPT_HEADER: self.attempt,
            QUEUE_HEADER: consumer.queue,
            REASON_HEADER: reason[:_MAX_REASON],
        }
        properties = properties_for_retry(self._message, received, headers, keep_ttl=False)
        assert properties is not None  # without keep_ttl there is always a result
        routed = await self._republish(
            names.dead_letter_exchange,
            self._topic(),
            properties,
            f"dead-lettering a message from {consumer.queue}",
        )
        if routed is None:
            return lost
        consumer.acks.ack(self._tag)
        if not routed:
            logger.error(
                "nothing is bound to the dead-letter exchange %s (was queue %s deleted?): RabbitMQ"
                " dropped a dead letter from %s",
                names.dead_letter_exchange,
                names.dead_letter_queue,
                consumer.queue,
            )
            return f"{where}, which dropped it: nothing is bound to it"
        return where

    async def _republish(
        self, exchange: str, routing_key: str, properties: Basic.Properties, doing: str
    ) -> bool | None:
        """Publish the delivery's body, confirmed; whether a queue took it, or None when the
        connection went meanwhile (then the broker delivers the original again, uncounted)."""
        session = self._consumer.session
        assert session is not None  # set before the first delivery
        try:
            return await session.publish_confirmed(self._delivered.body, exchange, routing_key, properties)
        except CLIENT_ERRORS as error:
            if self._delivered.channel.is_closed or not session.is_open:
                logger.debug("%s: the connection was lost (%r); the broker delivers it again", doing, error)
                return None
            raise session.boundary.error(error, doing) from error

    def _topic(self) -> str:
        """The topic it was published to (for invalid bytes, the routing key they came with)."""
        message = self._message
        return message.topic if message is not None else self._delivered.routing_key or ""
