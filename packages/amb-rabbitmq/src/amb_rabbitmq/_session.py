"""One AMQP connection, its channels and the exchanges every bus needs.

The broker adapter opens a new `Session` after each outage rather than patching up the old
one: all channel and delivery-tag state belongs to one connection, so a stale acknowledgement
can be recognised by its channel and never reaches a new one.

Channels, each with one job:

- ``setup``: declarations and bindings. A refused declaration closes only this channel, which
  is reopened on next use, so a bad subscribe never disturbs traffic.
- ``confirmed``: publisher confirms. `wait_for_confirmation=True` publishes, retries and
  dead-letters go here and wait for the broker's ack. Each runs as a task of its own that the
  caller awaits through `asyncio.shield`: the bus gives up on a confirmed publish after
  ``outage_timeout`` (it cancels it), and cancelling aiormq in the middle of a publish or of
  the fence's RPC would close the channel or leave a confirmation dangling.
- ``fast``: no confirms. Fire-and-forget publishes go here: writing the frame is the whole cost.
- ``consume``: every subscription's consumer, each with its own prefetch (``basic.qos`` before
  each ``basic.consume`` applies to that consumer only), and their acknowledgements, which
  `amb_rabbitmq._acks.Acknowledger` coalesces across all of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.commands import Basic

from amb_core.adapter import TaskSet
from amb_rabbitmq._acks import Acknowledger
from amb_rabbitmq._decoding import SharedDecoder
from amb_rabbitmq._errors import Boundary
from amb_rabbitmq._naming import Names
from amb_rabbitmq._quiet import ours

logger = logging.getLogger("amb.rabbitmq")

#: Called (possibly several times) when the session stops working: its connection closed, or
#: one of its traffic channels was closed by the broker.
LostCallback = Callable[["Session", "BaseException | None"], None]

#: Closing connections after a failed or cancelled `Session.open`, and connection attempts given
#: up on (closed once they end): referenced until done, whichever adapter they were for.
_closing = TaskSet("amb-rabbitmq (closing abandoned connections)")


class Session:
    """An open connection with its four channels and the topology declared."""

    __slots__ = (
        "_closing",
        "_fence",
        "_loop",
        "_on_lost",
        "_setup",
        "acks",
        "boundary",
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
        boundary: Boundary,
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
        self.boundary = boundary
        self._on_lost = on_lost
        self._closing = False
        self._loop = asyncio.get_running_loop()
        #: The RPC that fences the ``fast`` channel, shared by the confirmed publishes that
        #: must wait for it (see `start_fence`).
        self._fence: asyncio.Task[object] | None = None

    @classmethod
    async def open(
        cls, number: int, url: str, names: Names, timeout: float, on_lost: LostCallback, boundary: Boundary
    ) -> Session:
        """Connect, open the channels and declare the exchanges and the dead-letter queue.

        Raises what the client library raises (the caller maps it through ``boundary``). Failed
        or cancelled (the bus bounds `connect` by ``connect_timeout``), it leaves no connection
        open: what was opened is closed in a task of its own, which a cancellation cannot stop.
        """
        loop = asyncio.get_running_loop()
        # Everything aiormq starts for this connection inherits the mark (see _quiet.py).
        with ours(boundary):
            # In a task of its own, never cancelled: aiormq cancelled halfway through its
            # handshake can leave the socket open. Given up on, it ends by its own ``timeout``
            # and what it opened is closed then.
            connecting = loop.create_task(
                aio_pika.connect(
                    url, timeout=timeout, client_properties={"connection_name": f"amb ({names.prefix})"}
                )
            )
        try:
            connection = await asyncio.shield(connecting)
        except BaseException:
            # It may have connected just as this was cancelled, or may connect later.
            _closing.start(_close_once_connected(connecting))
            raise
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
            session = cls(number, connection, setup, confirmed, fast, consume, names, on_lost, boundary)
            await session._declare_topology()
        except BaseException:
            await asyncio.shield(_closing.start(_close(connection)))  # a cancellation goes on; the close too
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
        await self._setup.declare_queue(names.group_registry, durable=True)

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

    def start_fence(self) -> None:
        """Make the confirmed publishes from now on wait until the broker has routed every
        publish made so far on the ``fast`` channel.

        A synchronous method is answered only after the channel has handled every frame before
        it, so a confirmed publish made after this cannot overtake an earlier fire-and-forget one.
        """
        fence = self._loop.create_task(self.fast.basic_qos(prefetch_count=0))
        fence.add_done_callback(_retrieve)
        self._fence = fence

    async def settle(self, fire_and_forget: bool) -> None:
        """Before closing: make sure the broker has taken the acknowledgements decided so far
        and, with ``fire_and_forget``, the messages published on the ``fast`` channel. Closing
        the connection drops whatever still waits in the client's write queue."""
        await self.acks.send_all()
        await self.consume.basic_qos(prefetch_count=0)  # answered after the acks before it
        if fire_and_forget:
            self.start_fence()
        if self._fence is not None:
            await asyncio.wait((self._fence,))

    async def publish_confirmed(
        self, body: bytes, exchange: str, routing_key: str, properties: Basic.Properties
    ) -> bool:
        """Publish on the confirmed channel and wait for the broker; False if no queue took it.

        Safe to cancel: the publish goes on in its own task (see the module docstring). Raises
        `aiormq.exceptions.DeliveryError` when the broker refused (nacked) the message.
        """
        return await asyncio.shield(self.publish_routed(body, exchange, routing_key, properties))

    def publish_routed(
        self, body: bytes, exchange: str, routing_key: str, properties: Basic.Properties
    ) -> asyncio.Task[bool]:
        """`publish_confirmed` without waiting: a task that ends with whether a queue took it."""
        return self._loop.create_task(self._publish_confirmed(body, exchange, routing_key, properties))

    async def _publish_confirmed(
        self, body: bytes, exchange: str, routing_key: str, properties: Basic.Properties
    ) -> bool:
        fence = self._fence
        if fence is not None:
            if not fence.done():
                await asyncio.wait((fence,))  # shared with the other confirmed publishes
            if self._fence is fence:
                self._fence = None
            if fence.cancelled() or fence.exception() is not None:
                raise aiormq.exceptions.ChannelInvalidStateError("the fire-and-forget channel closed")
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


async def _close_once_connected(connecting: asyncio.Task[AbstractConnection]) -> None:
    """Close what a connection attempt that nobody waits for any more opens, if it does."""
    try:
        connection = await connecting
    except (asyncio.CancelledError, Exception):  # it failed: nothing was opened
        return
    await _close(connection)


async def _close(connection: AbstractConnection) -> None:
    try:
        await connection.close()
    except Exception:  # already broken: nothing left to release
        logger.debug("closing a RabbitMQ connection that failed to open failed", exc_info=True)


def _retrieve(task: asyncio.Task[object]) -> None:
    """Mark a fence's failure as seen: the confirmed publishes that needed it report it."""
    if not task.cancelled():
        task.exception()
