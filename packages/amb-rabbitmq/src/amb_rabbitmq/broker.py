"""`RabbitMQBroker`: the AMB contract mapped onto AMQP 0-9-1 with aio-pika.

The adapter keeps its own registry of subscriptions and, after an outage, opens a fresh
connection and replays that registry (declare, bind, consume) before publishing resumes. This
is what aio-pika's robust connection does too, but done here it can follow amb_core's backoff,
give every consumer its own prefetch again, tell publishers when the broker is back and never
acknowledge a delivery on a channel that no longer holds it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine
from typing import Any, ClassVar

import aio_pika.exceptions
import aiormq.exceptions
from pamqp.commands import Basic
from yarl import URL

from amb_core.adapter import BrokerAdapter, Capabilities
from amb_core.backoff import backoff_delays
from amb_core.errors import BrokerUnavailableError
from amb_core.message import Message
from amb_core.subscription import Subscription
from amb_core.wire import encode
from amb_rabbitmq.consumer import Consumer
from amb_rabbitmq.naming import Names
from amb_rabbitmq.options import Options
from amb_rabbitmq.properties import properties_for
from amb_rabbitmq.session import Session

logger = logging.getLogger("amb")

#: What a lost or unreachable broker raises from aio-pika and aiormq (asyncio.TimeoutError is
#: not an OSError before Python 3.11).
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    *aio_pika.exceptions.CONNECTION_EXCEPTIONS,
    asyncio.TimeoutError,
)


class RabbitMQBroker(BrokerAdapter):
    """The RabbitMQ adapter: ``MessageBus.from_url("amqp://guest:guest@localhost/")``.

    Options (keyword arguments, also accepted by ``MessageBus.from_url``): ``exchange``
    ("amb"), ``max_attempts`` (3), ``prefetch`` (from concurrency), ``persistent`` (True),
    ``connect_timeout`` (10 s), ``outage_timeout`` (30 s). See the package README.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        priority=True, survives_restart=True, redelivers_failed=True
    )

    def __init__(self, url: str = "amqp://guest:guest@localhost/", **options: Any) -> None:
        scheme = url.partition("://")[0].lower()
        if scheme not in ("amqp", "amqps"):
            raise ValueError(f"RabbitMQBroker needs an amqp:// or amqps:// URL, not {url!r}")
        self.url = url
        self.options = Options.parse(options)
        self.names = Names(self.options.exchange)
        parsed = URL(url)
        self._display_url = str(parsed.with_password("***")) if parsed.password else url
        self._persistent = self.options.persistent
        self._session: Session | None = None
        self._session_numbers = itertools.count(1)
        self._consumers: dict[str, Consumer] = {}
        self._open = False
        self._ready: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # The session on whose fast channel fire-and-forget messages went since the last fence.
        self._unfenced: Session | None = None

    def __repr__(self) -> str:
        return f"<RabbitMQBroker {self._display_url} exchange={self.names.exchange!r}>"

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        if self._open:
            return
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        try:
            async with self._lock:
                await self._open_session()
        except _CONNECTION_ERRORS as error:
            raise BrokerUnavailableError(
                f"cannot connect to RabbitMQ at {self._display_url}: {error or type(error).__name__}"
            ) from error
        self._open = True

    async def disconnect(self) -> None:
        self._open = False
        tasks = [*self._background, *([self._reconnecting] if self._reconnecting else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._reconnecting = None
        session, self._session = self._session, None
        if self._ready is not None:
            self._ready.clear()
        self._consumers.clear()
        unfenced, self._unfenced = self._unfenced, None
        if session is None:
            return
        try:
            await asyncio.wait_for(session.settle(unfenced is session), self.options.connect_timeout)
        except _CONNECTION_ERRORS as error:  # asyncio.TimeoutError included
            logger.warning(
                "closing: fire-and-forget messages or acknowledgements sent just before may not have"
                " reached RabbitMQ at %s (%r); unacknowledged messages will be redelivered",
                self._display_url,
                error,
            )
        await session.close()

    async def _open_session(self) -> Session:
        """Connect and restore every subscription; the caller holds ``_lock``."""
        session = await Session.open(
            next(self._session_numbers),
            self.url,
            self.names,
            self.options.connect_timeout,
            self._on_lost,
        )
        try:
            for consumer in list(self._consumers.values()):
                if consumer.active:
                    await self._restore(consumer, session)
        except BaseException:
            await session.close()
            raise
        # aiormq 7 (aio-pika 10, Python 3.11+) reports a broker-side cancel; 6.x drops it.
        cancel_callbacks = getattr(session.consume, "on_consumer_cancel_callbacks", None)
        if cancel_callbacks is not None:
            cancel_callbacks.add(self._on_consumer_cancelled)
        self._session = session
        assert self._ready is not None
        self._ready.set()
        return session

    @staticmethod
    async def _restore(consumer: Consumer, session: Session) -> None:
        try:
            await consumer.start(session)
        except aiormq.exceptions.AMQPChannelError:
            if not session.is_open:
                raise
            # Refused for good (its queue was redeclared with other arguments, say): the other
            # subscriptions must not stay down because of this one.
            logger.exception("could not restore the consumer of queue %s after a reconnect", consumer.queue)
            return
        if not consumer.active:  # unsubscribed while it was being started
            await consumer.stop()

    def _on_lost(self, session: Session, reason: BaseException | None) -> None:
        if session is not self._session or not self._open:
            return
        self._session = None
        assert self._ready is not None
        self._ready.clear()
        logger.warning("lost the connection to RabbitMQ at %s (%s); reconnecting", self._display_url, reason)
        self._spawn(session.close())  # when only a channel died, the connection is still open
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        assert self._lock is not None
        for failures, delay in enumerate(backoff_delays(), start=1):
            await asyncio.sleep(delay)
            if not self._open:
                return
            try:
                async with self._lock:
                    await self._open_session()
            except Exception as error:
                # The first failure and every 20th after it, so a long outage is visible but quiet.
                level = logging.WARNING if failures % 20 == 1 else logging.DEBUG
                logger.log(
                    level, "reconnecting to RabbitMQ at %s failed: %r; retrying", self._display_url, error
                )
                continue
            logger.info(
                "reconnected to RabbitMQ at %s; %d subscriptions restored",
                self._display_url,
                sum(consumer.active for consumer in self._consumers.values()),
            )
            return

    async def _live_session(self, deadline: float) -> Session:
        """The current session, waiting for a reconnect until ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        while True:
            session = self._session
            if session is not None:
                return session
            if not self._open or self._ready is None:
                raise BrokerUnavailableError(f"not connected to RabbitMQ at {self._display_url}")
            try:
                await asyncio.wait_for(self._ready.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise BrokerUnavailableError(
                    f"RabbitMQ at {self._display_url} has been unreachable for"
                    f" {self.options.outage_timeout} s (outage_timeout)"
                ) from None

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.options.outage_timeout

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ publishing

    async def publish(self, message: Message, *, confirm: bool) -> None:
        body = encode(message)
        topic: str = message.__dict__["topic"]
        properties = properties_for(message, self._persistent)
        exchange = self.names.exchange_for(topic)
        session = self._session
        if session is not None and not confirm:
            # The hot path: write the frames and return, as a fire-and-forget publish should.
            try:
                await session.fast.basic_publish(
                    body, exchange=exchange, routing_key=topic, properties=properties, wait=False
                )
            except _CONNECTION_ERRORS as error:
                self._lose(session, error)
            else:
                self._unfenced = session
                return
        await self._send(body, exchange, topic, properties, confirm, message.id)

    async def publish_raw(self, topic: str, data: bytes) -> None:
        properties = Basic.Properties(delivery_mode=2 if self._persistent else 1)
        await self._send(data, self.names.exchange_for(topic), topic, properties, False, "(raw)")

    async def _send(
        self,
        body: bytes,
        exchange: str,
        topic: str,
        properties: Basic.Properties,
        confirm: bool,
        message_id: str,
    ) -> None:
        """Publish, riding out an outage: wait for the reconnect (at most ``outage_timeout``)
        and send again. A message written just before a connection died may so arrive twice;
        at-least-once is the promise, and a confirmed publish is never reported sent unless
        the broker said so."""
        deadline = self._deadline()
        while True:
            session = await self._live_session(deadline)
            try:
                if not confirm:
                    await session.fast.basic_publish(
                        body, exchange=exchange, routing_key=topic, properties=properties, wait=False
                    )
                    self._unfenced = session
                    return
                if self._unfenced is session:
                    await session.fence()
                    self._unfenced = None
                if not await session.publish_confirmed(body, exchange, topic, properties):
                    logger.warning(
                        "no queue is bound to topic %s: RabbitMQ dropped confirmed message %s",
                        topic,
                        message_id,
                    )
                return
            except aiormq.exceptions.DeliveryError as error:
                raise BrokerUnavailableError(f"RabbitMQ refused message {message_id} on {topic}") from error
            except _CONNECTION_ERRORS as error:
                self._lose(session, error)

    def _lose(self, session: Session, error: BaseException) -> None:
        """A publish failed on ``session``: its traffic channel or connection is broken even if
        the close notification has not arrived yet."""
        logger.debug("publishing on RabbitMQ session %d failed: %r", session.number, error)
        self._on_lost(session, error)

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(self, subscription: Subscription) -> None:
        assert self._lock is not None
        consumer = Consumer(
            subscription,
            self.names,
            self.options.prefetch_for(subscription.concurrency),
            self.options.max_attempts,
        )
        # Registered first, so that a reconnect from now on restores it too.
        self._consumers[subscription.id] = consumer
        deadline = self._deadline()
        try:
            while True:
                session = await self._live_session(deadline)
                async with self._lock:
                    if consumer.is_current(session):
                        return  # a reconnect has started it meanwhile
                    if session is not self._session:
                        continue
                    try:
                        await consumer.start(session)
                        return
                    except aiormq.exceptions.AMQPChannelError as error:
                        if not session.is_open:
                            continue
                        raise BrokerUnavailableError(
                            f"RabbitMQ refused to set up queue {consumer.queue} for {subscription!r}: {error}"
                        ) from error
                    except _CONNECTION_ERRORS as error:
                        self._lose(session, error)
        except BaseException:
            # Failed or cancelled: a consumer the broker may have started already must go too.
            self._consumers.pop(subscription.id, None)
            consumer.active = False
            self._spawn(self._retire(consumer))
            raise

    async def unsubscribe(self, subscription: Subscription) -> None:
        consumer = self._consumers.pop(subscription.id, None)
        if consumer is None:
            return
        # Inactive at once: a reconnect that is restoring subscriptions right now skips it.
        consumer.active = False
        await self._retire(consumer, release_later=True)

    async def _retire(self, consumer: Consumer, *, release_later: bool = False) -> None:
        """Cancel ``consumer`` and hand back what it received but the bus did not handle."""
        try:
            await consumer.stop()
        except _CONNECTION_ERRORS as error:  # the connection went, and the consumer with it
            logger.debug("cancelling the consumer of queue %s failed: %r", consumer.queue, error)
            return
        if consumer.subscription.is_inbox:
            return  # nothing to hand back: replies are not acknowledged
        if release_later:
            self._spawn(consumer.release())
        else:
            await consumer.release()

    def _on_consumer_cancelled(self, frame: Basic.Cancel) -> None:
        """The broker cancelled one of our consumers (its queue was deleted under it): declare
        the queue again and resume, as after a reconnect."""
        session = self._session
        for consumer in self._consumers.values():
            if consumer.active and session is not None and consumer.consumer_tag == frame.consumer_tag:
                logger.warning("RabbitMQ cancelled the consumer of queue %s; restoring it", consumer.queue)
                self._spawn(self._restart(consumer, session))

    async def _restart(self, consumer: Consumer, session: Session) -> None:
        assert self._lock is not None
        async with self._lock:
            if consumer.active and session is self._session:
                try:
                    await consumer.start(session)
                except Exception:
                    logger.exception("could not restore the consumer of queue %s", consumer.queue)
