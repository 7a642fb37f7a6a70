"""One AMQP connection, its channels and the exchanges every bus needs.

The broker adapter opens a new `Session` after each outage rather than patching up the old
one: all channel and delivery-tag state belongs to one connection, so a stale acknowledgement
can be recognised by its channel and never reaches a new one.

Channels, each with one job:

- ``setup``: declarations and bindings. A refused declaration closes only this channel, which
  is reopened on next use, so a bad subscribe never disturbs traffic.
- ``confirmed``: publisher confirms. `wait_for_confirmation=True` publishes, retries and
  dead-letters go here and wait for the broker's ack.
- ``fast``: no confirms. Fire-and-forget publishes go here: writing the frame is the whole cost.
- ``consume``: every subscription's consumer, each with its own prefetch (``basic.qos`` before
  each ``basic.consume`` applies to that consumer only), and their acknowledgements, which
  `amb_rabbitmq.acks.Acknowledger` coalesces across all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.commands import Basic

from amb_rabbitmq.acks import Acknowledger
from amb_rabbitmq.decoding import SharedDecoder
from amb_rabbitmq.naming import Names

logger = logging.getLogger("amb")

#: Called (possibly several times) when the session stops working: its connection closed, or
#: one of its traffic channels was closed by the broker.
LostCallback = Callable[["Session", "BaseException | None"], None]


class Session:
    """An open connection with its four channels and the topology declared."""

    __slots__ = (
        "_closing",
        "_on_lost",
        "_setup",
        "acks",
        "confirmed",
        "connection",
        "consume",
        "decoder",
        "fast",
        "names",
        "number",
    )

    def __init__(
        self,
        number: int,
        connection: AbstractConnection,
        setup: AbstractChannel,
        confirmed: aiormq.Channel,
        fast: aiormq.Channel,
        consume: aiormq.Channel,
        names: Names,
        on_lost: LostCallback,
    ) -> None:
        self.number = number
        self.connection = connection
        self._setup = setup
        self.confirmed = confirmed
        self.fast = fast
        self.consume = consume
        self.acks = Acknowledger(consume)
        self.decoder = SharedDecoder()
        self.names = names
        self._on_lost = on_lost
        self._closing = False

    @classmethod
    async def open(
        cls, number: int, url: str, names: Names, timeout: float, on_lost: LostCallback
    ) -> Session:
        """Connect, open the channels and declare the exchanges and the dead-letter queue."""
        connection = await aio_pika.connect(
            url, timeout=timeout, client_properties={"connection_name": f"amb ({names.prefix})"}
        )
        try:
            setup = await connection.channel(publisher_confirms=False)
            traffic = [
                await connection.channel(publisher_confirms=True, on_return_raises=False),
                await connection.channel(publisher_confirms=False),
                await connection.channel(publisher_confirms=False),
            ]
            confirmed, fast, consume = [
                cast(aiormq.Channel, await channel.get_underlay_channel()) for channel in traffic
            ]
            session = cls(number, connection, setup, confirmed, fast, consume, names, on_lost)
            await session._declare_topology()
        except BaseException:
            await connection.close()
            raise
        connection.close_callbacks.add(session._closed)
        for channel in traffic:
            channel.close_callbacks.add(session._closed)
        return session

    async def _declare_topology(self) -> None:
        names = self.names
        topic = aio_pika.ExchangeType.TOPIC
        await self._setup.declare_exchange(names.exchange, topic, durable=True)
        await self._setup.declare_exchange(names.reserved_exchange, topic, durable=True)
        dead_letters = await self._setup.declare_exchange(names.dead_letter_exchange, topic, durable=True)
        queue = await self._setup.declare_queue(names.dead_letter_queue, durable=True)
        await queue.bind(dead_letters, "#")

    def _closed(self, sender: object, reason: BaseException | None = None) -> None:
        if not self._closing:
            self._on_lost(self, reason)

    @property
    def is_open(self) -> bool:
        return not self._closing and not self.connection.is_closed

    async def setup_channel(self) -> AbstractChannel:
        """The declarations channel, reopened if a refused declaration closed it."""
        if self._setup.is_closed:
            await self._setup.reopen()
        return self._setup

    async def fence(self) -> None:
        """Return once the broker has routed every publish made so far on the ``fast`` channel.

        A synchronous method is answered only after the channel has handled every frame before
        it, so a confirmed publish made after this cannot overtake an earlier fire-and-forget one.
        """
        await self.fast.basic_qos(prefetch_count=0)

    async def settle(self, fire_and_forget: bool) -> None:
        """Before closing: make sure the broker has taken the acknowledgements decided so far
        and, with ``fire_and_forget``, the messages published on the ``fast`` channel. Closing
        the connection drops whatever still waits in the client's write queue."""
        await self.acks.send_all()
        await self.consume.basic_qos(prefetch_count=0)  # answered after the acks before it
        if fire_and_forget:
            await self.fence()

    async def publish_confirmed(
        self, body: bytes, exchange: str, routing_key: str, properties: Basic.Properties
    ) -> bool:
        """Publish on the confirmed channel and wait for the broker; False if no queue took it.

        Raises `aiormq.exceptions.DeliveryError` when the broker refused (nacked) the message.
        """
        result = await self.confirmed.basic_publish(
            body, exchange=exchange, routing_key=routing_key, properties=properties, mandatory=True
        )
        # An unroutable mandatory message comes back (basic.return) before its ack; aiormq then
        # resolves the publish with the returned message instead of the Basic.Ack frame.
        return isinstance(result, Basic.Ack)

    async def close(self) -> None:
        """Close the connection (the broker requeues unacknowledged messages and deletes the
        exclusive queues)."""
        self._closing = True
        try:
            await self.connection.close()
        except Exception:  # already broken: nothing left to release
            logger.debug("closing the RabbitMQ connection failed", exc_info=True)
