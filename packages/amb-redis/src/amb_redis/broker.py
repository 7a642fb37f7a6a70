"""`RedisBroker`: AMB on Redis. Ungrouped subscriptions on Pub/Sub, groups on Streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any, ClassVar

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import RedisError

from amb_core.adapter import BrokerAdapter, Capabilities
from amb_core.errors import BrokerUnavailableError
from amb_core.message import Message
from amb_core.subscription import Subscription
from amb_core.topics import is_pattern
from amb_core.wire import decode_or_log, encode
from amb_redis._groups import GroupConsumer, GroupSettings
from amb_redis._names import Names, redis_glob
from amb_redis._pipe import CommandPipe
from amb_redis._pubsub import CHANNEL, PATTERN, PubSubConnection
from amb_redis._scripts import Scripts

logger = logging.getLogger("amb")


class _Route:
    """The local subscriptions behind one Redis channel or glob."""

    __slots__ = ("subscriptions", "topic")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.subscriptions: tuple[Subscription, ...] = ()


class RedisBroker(BrokerAdapter):
    """AMB on a Redis server (5.0 or later for Pub/Sub, 6.2 or later for groups).

    ``url`` is a redis-py URL: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://``
    for TLS; query options (``?ssl_cert_reqs=none``...) and extra keyword ``redis_options``
    go to redis-py's connection unchanged.

    Options: ``max_attempts`` deliveries of a grouped entry before it is dead-lettered;
    ``prefix`` of every Redis key AMB uses; ``stream_maxlen`` and ``dead_letter_maxlen``, the
    approximate length caps of group and dead-letter streams; ``prefetch``, how many entries a
    grouped subscription holds at once (default twice its concurrency); ``claim_idle``, seconds
    after which a dead consumer's entries are taken over by its group; ``group_retention``,
    seconds after which a group that no live member refreshed is deleted; ``timeout``, seconds
    to wait for an unreachable Redis before an operation fails; ``close_timeout``, seconds
    `disconnect` waits for queued publishes to reach Redis; ``max_pending``, commands in
    flight before fire-and-forget publishers wait.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        priority=True, survives_restart=True, redelivers_failed=True
    )

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        max_attempts: int = 3,
        prefix: str = "amb:",
        stream_maxlen: int = 100_000,
        dead_letter_maxlen: int = 100_000,
        prefetch: int | None = None,
        claim_idle: float = 30.0,
        group_retention: float = 86_400.0,
        timeout: float = 30.0,
        close_timeout: float = 5.0,
        max_pending: int = 4096,
        **redis_options: Any,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if prefetch is not None and prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        if min(stream_maxlen, dead_letter_maxlen, max_pending) < 1:
            raise ValueError("stream_maxlen, dead_letter_maxlen and max_pending must be positive")
        if min(claim_idle, group_retention, timeout) <= 0 or close_timeout < 0:
            raise ValueError("claim_idle, group_retention and timeout must be positive")
        self.url = url
        self._names = Names(prefix)
        self._scripts = Scripts(prefix, maxlen=stream_maxlen, dead_letter_maxlen=dead_letter_maxlen)
        self._connection_class, self._connection_kwargs, self._address = _connection_settings(
            url, redis_options
        )
        self._max_attempts = max_attempts
        self._prefetch = prefetch
        self._claim_idle = claim_idle
        self._group_retention = group_retention
        self._timeout = timeout
        self._close_timeout = close_timeout
        self._max_pending = max_pending
        self._id = uuid.uuid4().hex[:12]
        self._publish_header = self._scripts.publish.header(2)
        self._pipe: CommandPipe | None = None
        self._pubsub: PubSubConnection | None = None
        self._settings: GroupSettings | None = None
        self._channels: dict[bytes, _Route] = {}
        self._globs: dict[bytes, _Route] = {}
        self._ungrouped: dict[Subscription, tuple[bytes, bytes]] = {}
        self._consumers: dict[Subscription, GroupConsumer] = {}
        self._wakes: dict[bytes, list[GroupConsumer]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<RedisBroker {self._address}>"

    # -- connecting -------------------------------------------------------------------------

    async def _connect(self) -> AbstractConnection:
        connection = self._connection_class(**self._connection_kwargs)
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
        except BaseException as error:
            # A handshake that failed half-way leaves a socket open.
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
            if isinstance(error, (RedisError, OSError, asyncio.TimeoutError)):
                raise BrokerUnavailableError(
                    f"cannot connect to Redis at {self._address}: {error}"
                ) from error
            raise
        return connection

    async def connect(self) -> None:
        if self._pipe is not None:
            return
        pipe = CommandPipe(
            self._connect,
            address=self._address,
            scripts=self._scripts.all,
            max_pending=self._max_pending,
            on_reconnect=self._on_pipe_reconnect,
        )
        pubsub = PubSubConnection(
            self._connect,
            address=self._address,
            on_message=self._on_message,
            on_pattern_message=self._on_pattern_message,
            on_reconnect=self._wake_consumers,
        )
        await pipe.open()
        try:
            await pubsub.open()
        except BaseException:
            await pipe.close(0)
            raise
        self._pipe, self._pubsub = pipe, pubsub
        self._settings = GroupSettings(
            pipe=pipe,
            scripts=self._scripts,
            names=self._names,
            max_attempts=self._max_attempts,
            prefetch=self._prefetch,
            claim_idle=self._claim_idle,
            timeout=self._timeout,
            ready=lambda: pubsub.restored,
        )

    async def disconnect(self) -> None:
        for subscription in [*self._ungrouped, *self._consumers]:
            await self.unsubscribe(subscription)
        if self._retiring:
            await asyncio.wait(self._retiring, timeout=self._timeout)
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        pipe, pubsub = self._pipe, self._pubsub
        self._pipe = self._pubsub = self._settings = None
        if pubsub is not None:
            await pubsub.close()
        if pipe is not None:
            unsent = await pipe.close(self._close_timeout)
            if unsent:
                logger.warning(
                    "%d publishes or acknowledgements had not reached Redis at %s when the adapter closed: "
                    "they are lost",
                    unsent,
                    self._address,
                )

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, message: Message, *, confirm: bool) -> None:
        pipe, pubsub = self._pipe, self._pubsub
        if pipe is None or pubsub is None:
            raise BrokerUnavailableError("the Redis adapter is not connected")
        if message.reply_to is not None and not pubsub.restored:
            # A request sent while this bus's inbox is not subscribed again (after a lost
            # connection) would get its reply published to nobody.
            await pubsub.wait_restored(self._timeout)
        topic = message.topic.encode()
        data = encode(message)
        packed = self._publish_header + b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(topic), topic, len(data), data)
        if not confirm:
            if pipe.full:
                await pipe.wait_room(self._timeout)
            pipe.send(packed, None, True)
            return
        receivers = await pipe.call(packed, resend=True, timeout=self._timeout)
        if not receivers:
            logger.warning("no subscription receives message %s on %s", message.id, message.topic)

    async def publish_raw(self, topic: str, data: bytes) -> None:
        """Put ``data`` on ``topic`` exactly as `publish` puts an envelope there (the channel and
        the streams of matching groups), as a foreign producer could."""
        pipe = self._pipe
        if pipe is None:
            raise BrokerUnavailableError("the Redis adapter is not connected")
        await pipe.call(self._scripts.publish.call(topic.encode(), data), resend=True, timeout=self._timeout)

    # -- subscribing ------------------------------------------------------------------------

    async def subscribe(self, subscription: Subscription) -> None:
        pubsub, settings = self._pubsub, self._settings
        if pubsub is None or settings is None:
            raise BrokerUnavailableError("the Redis adapter is not connected")
        if subscription.group is not None:
            await self._join_group(subscription, pubsub, settings)
            return
        pattern = subscription.pattern
        if is_pattern(pattern):
            kind, key, table = PATTERN, redis_glob(pattern).encode(), self._globs
        else:
            kind, key, table = CHANNEL, pattern.encode(), self._channels
        route = table.get(key)
        if route is None:
            route = table[key] = _Route(pattern)
        route.subscriptions = (*route.subscriptions, subscription)
        self._ungrouped[subscription] = (kind, key)
        try:
            await pubsub.subscribe(kind, key, self._timeout)
        except BaseException:
            self._ungrouped.pop(subscription, None)
            self._drop_route(kind, key, subscription)
            raise

    async def _join_group(
        self, subscription: Subscription, pubsub: PubSubConnection, settings: GroupSettings
    ) -> None:
        consumer = GroupConsumer(subscription, f"{self._id}-{subscription.id}", settings)
        wake = consumer.wake_channel
        self._wakes.setdefault(wake, []).append(consumer)
        self._consumers[subscription] = consumer
        try:
            # Listen for wake-ups before the first read, so none is missed (see _groups).
            await pubsub.subscribe(CHANNEL, wake, self._timeout)
            await consumer.start()
        except BaseException:
            self._consumers.pop(subscription, None)
            self._forget_consumer(consumer)
            raise
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def unsubscribe(self, subscription: Subscription) -> None:
        ungrouped = self._ungrouped.pop(subscription, None)
        if ungrouped is not None:
            self._drop_route(*ungrouped, subscription)
            return
        consumer = self._consumers.pop(subscription, None)
        if consumer is None:
            return
        consumer.stop()
        self._forget_consumer(consumer)
        task = asyncio.get_running_loop().create_task(self._retire(consumer))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _drop_route(self, kind: bytes, key: bytes, subscription: Subscription) -> None:
        table = self._globs if kind == PATTERN else self._channels
        route = table.get(key)
        if route is not None and subscription in route.subscriptions:
            route.subscriptions = tuple(s for s in route.subscriptions if s is not subscription)
            if not route.subscriptions:
                del table[key]
        if self._pubsub is not None:
            self._pubsub.unsubscribe(kind, key)

    def _forget_consumer(self, consumer: GroupConsumer) -> None:
        consumers = self._wakes.get(consumer.wake_channel)
        if consumers is not None and consumer in consumers:
            consumers.remove(consumer)
            if not consumers:
                del self._wakes[consumer.wake_channel]
        if self._pubsub is not None:
            self._pubsub.unsubscribe(CHANNEL, consumer.wake_channel)

    async def _retire(self, consumer: GroupConsumer) -> None:
        """After an unsubscribe: let the handlers in flight finish and acknowledge, then hand
        what is left back to the group."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(consumer.subscription.drain(), self._timeout)
        try:
            await consumer.release()
        except Exception as error:
            logger.warning(
                "could not hand the unfinished entries of %r back to its group (%s): other members take "
                "them over after %s s",
                consumer,
                error,
                self._claim_idle,
            )

    # -- receiving --------------------------------------------------------------------------

    async def _on_message(self, channel: bytes, data: bytes) -> None:
        route = self._channels.get(channel)
        if route is None:
            consumers = self._wakes.get(channel)
            if consumers:
                for consumer in consumers:
                    consumer.wake(data)
            return
        message = decode_or_log(data, route.topic)
        if message is None:
            return
        for subscription in route.subscriptions:
            if not subscription.offer(message):
                await subscription.deliver(message)

    async def _on_pattern_message(self, glob: bytes, channel: bytes, data: bytes) -> None:
        route = self._globs.get(glob)
        if route is None or b":" in channel:  # AMB's own channels (wake-ups) contain ':', topics never
            return
        topic = channel.decode("utf-8", "replace")
        message: Message | None = None
        for subscription in route.subscriptions:
            if not subscription.matches(topic):
                continue
            if message is None:
                message = decode_or_log(data, topic)
                if message is None:
                    return
            if not subscription.offer(message):
                await subscription.deliver(message)

    # -- group upkeep -----------------------------------------------------------------------

    def _on_pipe_reconnect(self) -> None:
        if self._pubsub is not None and self._pubsub.restored:
            self._wake_consumers()

    def _wake_consumers(self) -> None:
        """After a reconnect: read whatever is waiting (a restarted Redis lost the groups; the
        first read finds that out and creates them again)."""
        for consumer in self._consumers.values():
            consumer.claim_later()

    async def _tick(self) -> None:
        """While this adapter has grouped subscriptions: keep their registrations fresh, forget
        groups whose members all died long ago, and take over entries of dead consumers."""
        interval = self._claim_idle / 2
        while self._consumers:
            await asyncio.sleep(interval)
            pipe = self._pipe
            if pipe is None:
                return
            now = int(time.time())
            for consumer in self._consumers.values():
                consumer.refresh()
            pipe.send(self._scripts.sweep.call(b"%d" % (now - int(self._group_retention))), None, False)
        self._ticker = None


def _connection_settings(
    url: str, options: dict[str, Any]
) -> tuple[type[AbstractConnection], dict[str, Any], str]:
    """redis-py's connection class and arguments for ``url`` and ``options``, adjusted for
    long-lived connections that this adapter reads itself."""
    options.setdefault("protocol", 2)
    pool = ConnectionPool.from_url(url, **options)
    # Replies are parsed here as RESP2 bytes (RESP3 turns Pub/Sub messages into push
    # notifications, and redis-py 8 ties maintenance notifications to it); reads wait for
    # messages indefinitely (a dead peer is noticed by TCP keepalive and by the next write).
    kwargs = {key: value for key, value in pool.connection_kwargs.items() if "maint_notifications" not in key}
    kwargs.update(decode_responses=False, protocol=2, socket_timeout=None)
    if kwargs.get("socket_connect_timeout") is None:
        kwargs["socket_connect_timeout"] = 5.0
    connection_class = pool.connection_class
    connection_class(**kwargs)  # an option redis-py does not take fails here, not at connect
    if "path" in kwargs:
        address = str(kwargs["path"])
    else:
        address = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    return connection_class, kwargs, address
