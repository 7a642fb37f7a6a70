"""`RabbitMQBroker`: the AMB contract mapped onto AMQP 0-9-1 with aio-pika.

The adapter keeps its own registry of subscriptions and, after an outage, opens a fresh
connection and replays that registry (declare, bind, consume) before it reports the link
restored. This is what aio-pika's robust connection does too, but done here it can follow
amb_core's backoff, give every consumer its own prefetch again, tell the bus exactly when the
broker is back (its `Link`) and never acknowledge a delivery on a channel that no longer holds it.

During an outage the adapter does not wait: a publish without a session raises
`BrokerUnavailableError` at once (after `Link.lost`), and the bus keeps the message and sends it
once the link is restored (the bus's outbox).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import fields
from functools import partial
from typing import Any, ClassVar

import aiormq.exceptions
from pamqp.commands import Basic
from yarl import URL

from amb_core.adapter import (
    AMBError,
    BrokerAdapter,
    BrokerUnavailableError,
    Capabilities,
    GroupInfo,
    Link,
    Message,
    Policy,
    Subscription,
    TaskSet,
    encode,
)
from amb_rabbitmq._consumer import QueueConsumer
from amb_rabbitmq._errors import CLIENT_ERRORS, Boundary, is_refusal
from amb_rabbitmq._fanout import FanoutReader
from amb_rabbitmq._group_consumer import GroupConsumer
from amb_rabbitmq._group_registry import GroupRegistry
from amb_rabbitmq._naming import Names
from amb_rabbitmq._options import BROKER_DEFAULT_MAX_MESSAGE_SIZE, Options
from amb_rabbitmq._properties import properties_for
from amb_rabbitmq._reply_inbox import ReplyInbox
from amb_rabbitmq._session import Session

logger = logging.getLogger("amb.rabbitmq")

#: For how long after a reconnect a confirmed message that no queue took is sent again. A broker
#: restart loses every exclusive queue, and can lose a group queue declared just before it; they
#: come back as their buses reconnect, each on its own backoff, so "no queue" then means "not yet".
RESUBSCRIBE_GRACE_S = 10.0
#: The pause between two such attempts.
RESUBSCRIBE_RETRY_S = 0.2


class RabbitMQBroker(BrokerAdapter):
    """The RabbitMQ adapter: ``MessageBus.from_url("amqp://guest:guest@localhost/")``.

    Options (keyword arguments, also accepted by ``MessageBus.from_url``): ``exchange``
    ("amb"), ``prefetch`` (from concurrency), ``persistent`` (True), ``max_message_size``
    (128 MiB, RabbitMQ's default), and the failure-policy options every adapter takes
    (``max_attempts``, ``connect_timeout``, ``outage_timeout``, ``outage_buffer``). See the
    package README.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        priority=True, survives_restart=True, redelivers_failed=True, reports_no_responders=True
    )
    #: Always set (by __init__): this adapter has a connection to report on.
    link: Link

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost/",
        *,
        exchange: str = "amb",
        prefetch: int | None = None,
        persistent: bool = True,
        max_message_size: int = BROKER_DEFAULT_MAX_MESSAGE_SIZE,
        **policy_options: Any,
    ) -> None:
        unknown = sorted(set(policy_options) - Policy.NAMES)
        if unknown:
            own = [field.name for field in fields(Options)]
            raise TypeError(
                f"RabbitMQBroker got unknown options {unknown}; it takes {sorted({*own, *Policy.NAMES})}"
            )
        super().__init__(**policy_options)
        try:
            parsed = URL(url)
            password = parsed.password
        except (TypeError, ValueError) as error:
            raise ValueError(f"RabbitMQBroker needs an amqp:// or amqps:// URL: {error}") from None
        self._display_url = str(parsed.with_password("***")) if password else url
        if parsed.scheme.lower() not in ("amqp", "amqps"):
            raise ValueError(f"RabbitMQBroker needs an amqp:// or amqps:// URL, not {self._display_url!r}")
        self.url = url
        self.options = Options(
            exchange=exchange, prefetch=prefetch, persistent=persistent, max_message_size=max_message_size
        )
        self.names = Names(self.options.exchange)
        self.max_message_size = self.options.max_message_size
        # As aiormq reads it: the path without its slashes, "/" when there is none.
        vhost = parsed.path.strip("/") or "/"
        self.boundary = Boundary(self.describe(), password, vhost)
        self.link = Link(self.describe())
        self._registry = GroupRegistry(self.names)
        self._persistent = self.options.persistent
        self._session: Session | None = None
        self._session_numbers = itertools.count(1)
        self._consumers: dict[str, QueueConsumer] = {}
        self._open = False
        self._lock: asyncio.Lock | None = None
        #: Everything the adapter runs beside the bus: reconnecting, closing a lost session,
        #: retiring consumers, noting that a group lost its last member.
        self._tasks = TaskSet(self.describe())
        self._reconnecting: asyncio.Task[None] | None = None
        # The session on whose fast channel fire-and-forget messages went since the last fence.
        self._unfenced: Session | None = None
        # When the link was last restored (loop time); None before the first outage.
        self._restored_at: float | None = None

    def __repr__(self) -> str:
        return f"<RabbitMQBroker {self._display_url} exchange={self.names.exchange!r}>"

    def describe(self) -> str:
        return f"RabbitMQ at {self._display_url}"

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        if self._open:
            return
        self._lock = asyncio.Lock()
        timeout = f"connect_timeout ({self.policy.connect_timeout} s)"
        async with self._lock:
            with self.boundary.mapping("the connection", timeout):
                await self._open_session()
        self._open = True

    async def disconnect(self) -> None:
        self._open = False
        await self._tasks.close()
        self._reconnecting = None
        session, self._session = self._session, None
        self._consumers.clear()
        unfenced, self._unfenced = self._unfenced, None
        if session is None:
            return
        try:
            await asyncio.wait_for(session.settle(unfenced is session), self.policy.connect_timeout)
        except CLIENT_ERRORS as error:  # asyncio.TimeoutError included
            logger.warning(
                "closing: fire-and-forget messages or acknowledgements sent just before may not have"
                " reached %s (%s); unacknowledged messages will be redelivered",
                self.boundary.name,
                self.boundary.reason(error),
            )
        await session.close()

    async def _open_session(self) -> Session:
        """Connect and restore every subscription; the caller holds ``_lock``."""
        session = await Session.open(
            next(self._session_numbers),
            self.url,
            self.names,
            self.policy.connect_timeout,
            self._on_lost,
            self.boundary,
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
        return session

    @staticmethod
    async def _restore(consumer: QueueConsumer, session: Session) -> None:
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
        # The Link logs it (once per outage); the details are for DEBUG.
        logger.debug("RabbitMQ session %d lost: %r", session.number, reason)
        self.link.lost(self.boundary.reason(reason) if reason is not None else "the connection closed")
        self._tasks.start(session.close())  # when only a channel died, the connection is still open
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = self._tasks.start(self._reconnect())

    async def _reconnect(self) -> None:
        session = await self.link.reconnect(self._reconnect_once, keep_going=lambda: self._open)
        if session is None:
            return
        logger.debug(
            "reconnected to %s; %d subscriptions restored",
            self.boundary.name,
            sum(consumer.active for consumer in self._consumers.values()),
        )
        self._restored_at = asyncio.get_running_loop().time()
        self.link.restored()

    async def _reconnect_once(self) -> Session:
        assert self._lock is not None
        timeout = self.policy.connect_timeout
        async with self._lock:
            try:
                # Bounded like connect(): a broker that accepts and never answers must not
                # stall the reconnect loop.
                return await asyncio.wait_for(self._open_session(), timeout)
            except CLIENT_ERRORS as error:
                # For the Link's lines, which name the broker already: the reason only.
                raise BrokerUnavailableError(
                    self.boundary.why(error, f"connect_timeout ({timeout} s)")
                ) from error

    def _unavailable(self) -> BrokerUnavailableError:
        """The error for an operation that needs a connection when there is none."""
        if not self._open:
            return BrokerUnavailableError(f"{self.boundary.name}: not connected")
        self._ensure_lost()
        return self.link.unavailable()

    def _ensure_lost(self) -> None:
        # Cannot happen (a session is only dropped through _on_lost), but the bus must never
        # see "no connection" while the link says up: it would not keep the message.
        if self.link.up:
            self.link.lost("the connection is gone")

    def _failed(self, session: Session, error: Exception, doing: str) -> AMBError:
        """What ``error`` (raised by the client library while ``doing`` something on
        ``session``) becomes; a broken connection or traffic channel is reported lost first, so
        that the bus keeps what could not be sent."""
        translated = self.boundary.error(error, doing)
        if isinstance(translated, BrokerUnavailableError):
            logger.debug("%s on RabbitMQ session %d failed: %r", doing, session.number, error)
            self._on_lost(session, error)
        return translated

    # ------------------------------------------------------------------ publishing

    async def publish(self, message: Message, *, confirm: bool) -> None:
        body = encode(message, self.max_message_size)
        fields = message.__dict__
        topic: str = fields["topic"]
        properties = properties_for(message, self._persistent)
        exchange = self.names.exchange_for(topic)
        session = self._session
        if session is not None and not confirm:
            # The hot path: write the frames and return, as a fire-and-forget publish should.
            try:
                await session.fast.basic_publish(
                    body, exchange=exchange, routing_key=topic, properties=properties, wait=False
                )
            except CLIENT_ERRORS as error:
                if session is self._session or self._session is None:
                    raise self._failed(session, error, f"publishing message {fields['id']}") from error
                # It failed on a connection already replaced: send it on the new one.
            else:
                self._unfenced = session
                return
        await self._send(body, exchange, topic, properties, confirm, fields["id"])

    async def publish_tracked(
        self, message: Message, receivers: Callable[[int], None], *, count: bool = False
    ) -> None:
        """Publish a request on the confirmed channel, ``mandatory``, without waiting: the
        broker returns it before its ack when no queue is bound to its topic, and then
        ``receivers(0)`` says that nobody receives it. (A count RabbitMQ cannot give.)"""
        body = encode(message, self.max_message_size)
        topic = message.topic
        session = self._session
        if session is None:
            raise self._unavailable()  # the bus keeps it until the connection is back
        if self._unfenced is session:
            # Fire-and-forget messages went out just before on the other channel: this must
            # not overtake them.
            session.start_fence()
            self._unfenced = None
        properties = properties_for(message, self._persistent)
        routing = session.publish_routed(body, self.names.exchange_for(topic), topic, properties)
        routing.add_done_callback(partial(self._routed, receivers, session, message.id))

    def _routed(
        self, receivers: Callable[[int], None], session: Session, message_id: str, routing: asyncio.Task[bool]
    ) -> None:
        if routing.cancelled():
            return
        error = routing.exception()
        if error is None:
            if not routing.result():
                receivers(0)
        elif isinstance(error, aiormq.exceptions.DeliveryError):
            logger.warning("%s refused request %s (basic.nack)", self.boundary.name, message_id)
        elif isinstance(error, CLIENT_ERRORS):
            # The request may be lost with the connection: its requester's timeout tells.
            self._failed(session, error, f"publishing request {message_id}")
        else:
            logger.error("publishing request %s failed", message_id, exc_info=error)

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
        """Publish on the current session, or raise `BrokerUnavailableError` at once when there
        is none (the bus keeps the message during an outage). A confirmed publish is reported
        sent only once the broker said so; one that fails as the connection dies may have
        reached the broker all the same, and the bus then sends it again (at least once). One
        that no queue took within `RESUBSCRIBE_GRACE_S` of a reconnect is sent again until a
        queue takes it or the grace ends: the subscriptions of other buses are coming back."""
        while not await self._send_once(body, exchange, topic, properties, confirm, message_id):
            if not self._resubscribing():
                logger.warning(
                    "no queue is bound to topic %s: RabbitMQ dropped confirmed message %s", topic, message_id
                )
                return
            await asyncio.sleep(RESUBSCRIBE_RETRY_S)

    def _resubscribing(self) -> bool:
        """Whether the link came back less than `RESUBSCRIBE_GRACE_S` ago."""
        restored_at = self._restored_at
        return (
            restored_at is not None and asyncio.get_running_loop().time() - restored_at < RESUBSCRIBE_GRACE_S
        )

    async def _send_once(
        self,
        body: bytes,
        exchange: str,
        topic: str,
        properties: Basic.Properties,
        confirm: bool,
        message_id: str,
    ) -> bool:
        """One attempt of `_send`: whether a queue took the message (always True unconfirmed)."""
        doing = f"publishing message {message_id} on {topic}"
        while True:
            session = self._session
            if session is None:
                raise self._unavailable()
            try:
                if not confirm:
                    await session.fast.basic_publish(
                        body, exchange=exchange, routing_key=topic, properties=properties, wait=False
                    )
                    self._unfenced = session
                    return True
                if self._unfenced is session:
                    # Fire-and-forget messages went out just before: this must not overtake them.
                    session.start_fence()
                    self._unfenced = None
                return await session.publish_confirmed(body, exchange, topic, properties)
            except aiormq.exceptions.DeliveryError as error:
                # Nacked: the broker could not take it just now (an internal error, a full
                # queue that rejects publishes); the connection is fine.
                raise BrokerUnavailableError(
                    f"{self.boundary.name} refused message {message_id} on {topic} (basic.nack);"
                    " it was not taken"
                ) from error
            except CLIENT_ERRORS as error:
                failed = self._failed(session, error, doing)
                if self._session is None or self._session is session:
                    raise failed from error
                # It failed on a connection that was replaced meanwhile: send it on the new one.

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(self, subscription: Subscription) -> None:
        assert self._lock is not None
        consumer = self._consumer_for(subscription)
        # Registered first, so that a reconnect from now on restores it too.
        self._consumers[subscription.id] = consumer
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.outage_timeout
        try:
            while True:
                session = self._session
                if session is None:
                    # The bus waits for the link before subscribing; this covers an outage that
                    # began since.
                    if not self._open:
                        raise self._unavailable()
                    self._ensure_lost()
                    await self.link.wait_up(max(0.0, deadline - loop.time()))
                    continue
                async with self._lock:
                    if consumer.is_current(session):
                        return  # a reconnect has started it meanwhile
                    if session is not self._session:
                        continue
                    try:
                        await consumer.start(session)
                        return
                    except CLIENT_ERRORS as error:
                        doing = f"setting up queue {consumer.queue} for {subscription!r}"
                        if is_refusal(error) and session.is_open:
                            raise self.boundary.error(error, doing) from error
                        self._failed(session, error, doing)
        except BaseException:
            # Failed or cancelled: a consumer the broker may have started already must go too.
            self._consumers.pop(subscription.id, None)
            consumer.active = False
            self._tasks.start(self._retire(consumer))
            raise

    def _consumer_for(self, subscription: Subscription) -> QueueConsumer:
        """The consumer of ``subscription``'s role (its queue and how it is consumed)."""
        if subscription.is_inbox:
            return ReplyInbox(subscription, self.names)
        prefetch = self.options.prefetch_for(subscription.concurrency)
        if subscription.group is None:
            return FanoutReader(subscription, self.names, prefetch)
        return GroupConsumer(subscription, self.names, prefetch, self._registry, self.policy.group_expiry)

    async def unsubscribe(self, subscription: Subscription) -> None:
        consumer = self._consumers.pop(subscription.id, None)
        if consumer is None:
            return
        # Inactive at once: a reconnect that is restoring subscriptions right now skips it.
        consumer.active = False
        await self._retire(consumer, release_later=True)

    async def _retire(self, consumer: QueueConsumer, *, release_later: bool = False) -> None:
        """Cancel ``consumer`` and hand back what it received but the bus did not handle."""
        try:
            await consumer.stop()
        except CLIENT_ERRORS as error:  # the connection went, and the consumer with it
            logger.debug("cancelling the consumer of queue %s failed: %r", consumer.queue, error)
            return
        if isinstance(consumer, GroupConsumer):
            self._tasks.start(consumer.note_left(self._session))
        if release_later:
            self._tasks.start(consumer.release())
        else:
            await consumer.release()

    # ------------------------------------------------------------------ groups over time

    async def list_groups(self) -> list[GroupInfo]:
        session = self._current()
        reader = await session.connection.channel(publisher_confirms=False)
        try:
            with self.boundary.mapping("listing groups"):
                return await self._registry.list(reader, session.setup_channel)
        finally:
            if not reader.is_closed:
                await reader.close()

    async def purge_group(self, group: str, pattern: str) -> int:
        session = self._current()
        with self.boundary.mapping(f"purging group {group!r} on {pattern!r}"):
            return await self._registry.purge(await session.setup_channel(), group, pattern)

    async def delete_group(self, group: str, pattern: str) -> bool:
        session = self._current()
        with self.boundary.mapping(f"deleting group {group!r} on {pattern!r}"):
            return await self._registry.delete(session.setup_channel, group, pattern)

    def _current(self) -> Session:
        session = self._session
        if session is None:
            raise self._unavailable()
        return session

    def _on_consumer_cancelled(self, frame: Basic.Cancel) -> None:
        """The broker cancelled one of our consumers (its queue was deleted under it): declare
        the queue again and resume, as after a reconnect."""
        session = self._session
        for consumer in self._consumers.values():
            if consumer.active and session is not None and consumer.consumer_tag == frame.consumer_tag:
                logger.warning("RabbitMQ cancelled the consumer of queue %s; restoring it", consumer.queue)
                self._tasks.start(self._restart(consumer, session))

    async def _restart(self, consumer: QueueConsumer, session: Session) -> None:
        assert self._lock is not None
        async with self._lock:
            if consumer.active and session is self._session:
                try:
                    await consumer.start(session)
                except Exception:
                    logger.exception("could not restore the consumer of queue %s", consumer.queue)
