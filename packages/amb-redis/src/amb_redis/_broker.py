"""`RedisBroker`: AMB on Redis. Ungrouped subscriptions on Pub/Sub (`FanoutReader`), groups on
Streams (a `GroupConsumer` per grouped subscription); both kinds of publish go through one
script call on the pipelined command connection (`CommandPipe`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from redis.exceptions import ResponseError

from amb_core.adapter import (
    BrokerAdapter,
    BrokerUnavailableError,
    Capabilities,
    GroupInfo,
    GroupInUseError,
    Link,
    Message,
    Policy,
    Subscription,
    TaskSet,
    encode,
    note_unreceived,
)
from amb_redis._backlog import Backlog
from amb_redis._connection import Connector, abort
from amb_redis._fanout import FanoutReader
from amb_redis._group_consumer import GroupConsumer, GroupSettings
from amb_redis._names import Names
from amb_redis._options import DEFAULT_MAX_MESSAGE_SIZE, RENAMED, Options
from amb_redis._pipe import CommandPipe
from amb_redis._pubsub import CHANNEL, PubSubConnection
from amb_redis._resp import command
from amb_redis._scripts import Scripts

logger = logging.getLogger("amb.redis")


class RedisBroker(BrokerAdapter):
    """AMB on a Redis server (5.0 or later for Pub/Sub, 6.2 or later for groups).

    ``url`` is a redis-py URL: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://``
    for TLS; query options (``?ssl_cert_reqs=none``...) and extra keyword ``redis_options``
    go to redis-py's connection unchanged.

    Options: the ones every adapter takes (``max_attempts``, ``connect_timeout``,
    ``outage_timeout``, ``outage_buffer``, ``group_expiry``: see `amb_core.Policy`; a
    group no member has joined for ``group_expiry`` is removed with its backlog by the bus's own
    bookkeeping in Redis, see `amb_redis._scripts`); ``prefix`` of every
    Redis key AMB uses; ``stream_maxlen``, the backlog (entries not yet acknowledged by every
    group) at which a group stream's publishers wait for its consumers; ``dead_letter_maxlen``,
    the approximate cap of dead-letter streams; ``prefetch``, how many entries a grouped
    subscription holds at once (default twice its concurrency); ``claim_idle``, seconds after
    which a dead consumer's entries are taken over by its group (and twice which a member that
    stopped vouching for itself no longer counts as live); ``close_timeout``, seconds
    `disconnect` waits for queued publishes to reach Redis; ``max_pending``, commands in flight
    before fire-and-forget publishers wait; ``max_message_size``, the largest encoded message
    `publish` sends (default `DEFAULT_MAX_MESSAGE_SIZE`, 8 MiB).
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        priority=True,
        survives_restart=True,
        redelivers_failed=True,
        reports_no_responders=True,
        counts_receivers=True,
    )

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "amb:",
        stream_maxlen: int = 100_000,
        dead_letter_maxlen: int = 100_000,
        prefetch: int | None = None,
        claim_idle: float = 30.0,
        close_timeout: float = 5.0,
        max_pending: int = 4096,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        **options: Any,
    ) -> None:
        for old, instead in RENAMED.items():
            if old in options:
                raise TypeError(instead)
        super().__init__(**{name: options.pop(name) for name in list(options) if name in Policy.NAMES})
        own = Options(
            prefix=prefix,
            stream_maxlen=stream_maxlen,
            dead_letter_maxlen=dead_letter_maxlen,
            prefetch=prefetch,
            claim_idle=claim_idle,
            close_timeout=close_timeout,
            max_pending=max_pending,
            max_message_size=max_message_size,
        )
        self._options = own
        #: The largest encoded message `publish` sends (see `DEFAULT_MAX_MESSAGE_SIZE`).
        self.max_message_size = own.max_message_size
        self._names = Names(own.prefix)
        self._scripts = Scripts(
            own.prefix, maxlen=own.stream_maxlen, dead_letter_maxlen=own.dead_letter_maxlen
        )
        self._stream_maxlen = own.stream_maxlen
        self._connector = Connector(url, options, self.policy.connect_timeout)
        self._link = self.link = Link(self._connector.name)
        self._prefetch = own.prefetch
        self._claim_idle = own.claim_idle
        self._close_timeout = own.close_timeout
        self._max_pending = own.max_pending
        self._id = uuid.uuid4().hex[:12]
        self._publish_header = self._scripts.publish.header(2)
        self._counted_header = self._scripts.counted.header(2)
        self._pipe: CommandPipe | None = None
        self._pubsub: PubSubConnection | None = None
        self._settings: GroupSettings | None = None
        self._backlog: Backlog | None = None
        #: True while a publish cannot go straight out: the connection is down, or a group
        #: stream's backlog is full. The one thing the publish hot path checks.
        self._hold = False
        self._fanout = FanoutReader(self._names, self._wake)
        self._consumers: dict[Subscription, GroupConsumer] = {}
        self._wakes: dict[bytes, list[GroupConsumer]] = {}
        #: Group members handing their entries back after an unsubscribe (see `_retire`), given
        #: ``close_timeout`` to finish when the adapter closes.
        self._retiring = TaskSet(f"{self._connector.name}: leaving groups")
        #: The group upkeep (`_tick`) and a restore after a reconnect (`_restore`), cancelled at once.
        self._upkeep = TaskSet(self._connector.name)
        self._ticker: asyncio.Task[None] | None = None
        self._restoring: asyncio.Task[None] | None = None
        self._restore_again = False
        self._durability_checked = False

    def __repr__(self) -> str:
        return f"<RedisBroker {self._connector.address}>"

    def describe(self) -> str:
        return self._connector.name

    # -- connecting -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the command and Pub/Sub connections. The bus cancels this after
        ``connect_timeout``; nothing is started until both are open, and a connection opened
        before the cancellation is closed at once."""
        if self._pipe is not None:
            return
        connector = self._connector
        first = await connector.open()
        try:
            second = await connector.open()
        except BaseException:
            abort(first)
            raise
        pipe = CommandPipe(
            connector,
            link=self._link,
            scripts=self._scripts.all,
            max_pending=self._max_pending,
            on_lost=self._lost,
            on_reconnect=self._connection_back,
            on_error=self._error_reply,
        )
        pubsub = PubSubConnection(
            connector,
            link=self._link,
            on_message=self._fanout.on_message,
            on_pattern_message=self._fanout.on_pattern_message,
            on_lost=self._lost,
            on_restored=self._connection_back,
        )
        pipe.start(first)
        pubsub.start(second)
        self._pipe, self._pubsub = pipe, pubsub
        self._backlog = Backlog(
            pipe,
            self._scripts,
            self._names,
            name=connector.name,
            maxlen=self._stream_maxlen,
            on_change=self._update_hold,
        )
        self._hold = False
        self._settings = GroupSettings(
            pipe=pipe,
            scripts=self._scripts,
            names=self._names,
            name=connector.name,
            prefetch=self._prefetch,
            claim_idle=self._claim_idle,
            timeout=self.policy.outage_timeout,
            expiry=self.policy.group_expiry,
            ready=lambda: pubsub.restored,
        )
        # Groups that expired while no bus of theirs ran go now (see `list_groups`).
        pipe.send(self._scripts.sweep.call(b"%d" % int(time.time())), None, False)

    async def disconnect(self) -> None:
        for subscription in [*self._fanout.subscriptions, *self._consumers]:
            await self.unsubscribe(subscription)
        await self._retiring.close(max(self._close_timeout, 0.1))
        await self._upkeep.close()
        self._ticker = self._restoring = None
        pipe, pubsub, backlog = self._pipe, self._pubsub, self._backlog
        self._pipe = self._pubsub = self._settings = self._backlog = None
        if backlog is not None:
            await backlog.close()
        if pubsub is not None:
            await pubsub.close()
        if pipe is not None:
            _log_unsent(await pipe.close(self._close_timeout), self._link.name)

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, message: Message, *, confirm: bool) -> None:
        pipe = self._pipe
        if pipe is None:
            raise BrokerUnavailableError(f"{self._link.name}: the adapter is not connected")
        if self._hold:
            await self._held(message.topic)
        packed = self._call(self._publish_header, message)
        if not confirm:
            if pipe.full:
                await pipe.wait_room(self.policy.outage_timeout)
            pipe.send(packed, None, True)
            return
        receivers = await self._confirmed(pipe, packed)
        if not receivers:
            note_unreceived(logger, message)

    async def publish_tracked(
        self, message: Message, receivers: Callable[[int], None], *, count: bool = False
    ) -> None:
        """Publish as `publish` does without confirmation; the script's answer says how many
        receive it (with ``count``, the counting script's exact number of AMB subscriptions)."""
        pipe = self._pipe
        if pipe is None:
            raise BrokerUnavailableError(f"{self._link.name}: the adapter is not connected")
        if self._hold:
            await self._held(message.topic)
        packed = self._call(self._counted_header if count else self._publish_header, message)
        if pipe.full:
            await pipe.wait_room(self.policy.outage_timeout)
        pipe.send(packed, partial(self._counted, receivers, count), True)

    def _call(self, header: bytes, message: Message) -> bytes:
        """A call of a publishing script (``header``) with ``message``'s topic and envelope."""
        topic = message.topic.encode()
        data = encode(message, self.max_message_size)
        return header + b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(topic), topic, len(data), data)

    def _counted(self, receivers: Callable[[int], None], count: bool, reply: Any) -> None:
        """The answer to a tracked publish: a count, or an error (an ``AMBFULL`` carries the
        count too; a lost connection says nothing, the request then waits for its timeout).
        Without ``count``, only "nobody" is worth telling."""
        if isinstance(reply, int):
            if count or not reply:
                receivers(reply)
        elif isinstance(reply, ResponseError):
            full = self._backlog.note(reply) if self._backlog is not None else None
            if full is not None:
                receivers(full)
            else:
                logger.error("%s refused a request: %s", self._link.name, reply)

    async def publish_raw(self, topic: str, data: bytes) -> None:
        """Put ``data`` on ``topic`` exactly as `publish` puts an envelope there (the channel and
        the streams of matching groups), as a foreign producer could."""
        pipe = self._pipe
        if pipe is None:
            raise BrokerUnavailableError(f"{self._link.name}: the adapter is not connected")
        await self._confirmed(pipe, self._scripts.publish.call(topic.encode(), data))

    async def _confirmed(self, pipe: CommandPipe, packed: bytes) -> int:
        """Run a publish script call and return how many subscriptions receive it."""
        try:
            receivers: int = await pipe.call(packed, resend=True)
        except ResponseError as error:
            full = self._backlog.note(error) if self._backlog is not None else None
            if full is None:
                raise
            receivers = full  # taken, and a group's backlog is at its cap: publishers wait from now
        return receivers

    async def _held(self, topic: str) -> None:
        """What a publish does when `_hold` is set."""
        if not self._link.up:
            raise self._link.unavailable()  # the bus keeps it until the connection is back
        backlog = self._backlog
        if backlog is not None and backlog.blocks(topic):
            await backlog.wait(topic, self.policy.outage_timeout)

    def _update_hold(self) -> None:
        backlog = self._backlog
        self._hold = not self._link.up or (backlog is not None and bool(backlog.full))

    def _lost(self, reason: str) -> None:
        """Either connection is gone (the Link logs it; the bus keeps what is published)."""
        self._hold = True
        self._link.lost(reason)

    def _error_reply(self, error: ResponseError) -> bool:
        """An error reply to a fire-and-forget command: True if it was expected."""
        backlog = self._backlog
        return backlog is not None and backlog.note(error) is not None

    # -- subscribing ------------------------------------------------------------------------

    async def subscribe(self, subscription: Subscription) -> None:
        pubsub, settings = self._pubsub, self._settings
        if pubsub is None or settings is None:
            raise BrokerUnavailableError(f"{self._link.name}: the adapter is not connected")
        if subscription.group is not None:
            await self._join_group(subscription, pubsub, settings)
        else:
            await self._fanout.subscribe(subscription, pubsub, self.policy.outage_timeout)

    async def _join_group(
        self, subscription: Subscription, pubsub: PubSubConnection, settings: GroupSettings
    ) -> None:
        consumer = GroupConsumer(subscription, f"{self._id}-{subscription.id}", settings)
        wake = consumer.wake_channel
        self._wakes.setdefault(wake, []).append(consumer)
        self._consumers[subscription] = consumer
        try:
            # Listen for wake-ups before the first read, so none is missed (see _groups).
            await pubsub.subscribe(CHANNEL, wake, self.policy.outage_timeout)
            await consumer.start()
        except BaseException:
            self._consumers.pop(subscription, None)
            self._forget_consumer(consumer)
            raise
        if self._ticker is None:
            self._ticker = self._upkeep.start(self._tick())
        if not self._durability_checked:
            self._durability_checked = True
            settings.pipe.send(command(b"INFO", b"persistence"), self._persistence, False)

    def _persistence(self, info: Any) -> None:
        """Warn once if Redis keeps no append-only file: then a crash loses confirmed group
        messages (and the groups themselves)."""
        if isinstance(info, bytes) and b"aof_enabled:0" in info:
            logger.warning(
                "%s runs without appendonly persistence: if Redis crashes or restarts, groups lose "
                "messages whose publish was confirmed (and the groups themselves). Run it with "
                "'appendonly yes' and 'appendfsync always' (see amb-redis's README)",
                self._link.name,
            )

    async def unsubscribe(self, subscription: Subscription) -> None:
        if self._fanout.unsubscribe(subscription, self._pubsub):
            return
        consumer = self._consumers.pop(subscription, None)
        if consumer is None:
            return
        consumer.stop()
        self._forget_consumer(consumer)
        self._retiring.start(self._retire(consumer))

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
            await asyncio.wait_for(consumer.subscription.drain(), self.policy.outage_timeout)
        pipe = self._pipe
        if pipe is None or not pipe.connected:
            logger.debug(
                "%r left while %s is unreachable: its entries are taken over later", consumer, self._link.name
            )
            return
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

    def _wake(self, channel: bytes, data: bytes) -> None:
        """A message on a channel no ungrouped subscription listens to: a group's wake-up."""
        consumers = self._wakes.get(channel)
        if consumers:
            for consumer in consumers:
                consumer.wake(data)

    # -- recovering -------------------------------------------------------------------------

    def _connection_back(self) -> None:
        """The command connection reconnected, or Pub/Sub is subscribed again."""
        if self._restoring is None:
            self._restoring = self._upkeep.start(self._restore())
        else:
            self._restore_again = True

    async def _restore(self) -> None:
        """Once both connections are back: register the groups again (a Redis that lost its
        data recreates them) before anything queued meanwhile is written, then tell the bus
        the connection is back and let every consumer read what is waiting."""
        try:
            while True:
                self._restore_again = False
                pipe, pubsub = self._pipe, self._pubsub
                if pipe is None or pubsub is None or not pipe.connected or not pubsub.restored:
                    return  # the other connection calls again once it is back
                consumers = list(self._consumers.values())
                results = await asyncio.gather(
                    *(consumer.ensure(urgent=True) for consumer in consumers), return_exceptions=True
                )
                if self._restore_again or not pipe.connected or not pubsub.restored:
                    continue
                for consumer, result in zip(consumers, results, strict=True):
                    if result is True:
                        consumer.recreated()
                    elif isinstance(result, BaseException):
                        # Its pump finds the group missing and creates it.
                        logger.warning(
                            "%s: could not register %r again: %s", self._link.name, consumer, result
                        )
                pipe.open_gate()
                self._link.restored()
                self._update_hold()
                for consumer in consumers:
                    consumer.reconnected()
                return
        except Exception:
            # A bug, not an outage: carry on as if restored rather than stay down for good.
            logger.exception("%s: restoring after a reconnect failed", self._link.name)
            if self._pipe is not None:
                self._pipe.open_gate()
                self._link.restored()
                self._update_hold()
        finally:
            self._restoring = None

    # -- groups over time (amb_core.GroupInfo) -----------------------------------------------

    async def list_groups(self) -> list[GroupInfo]:
        rows = await self._command_pipe().call(self._scripts.list.call(b"%d" % int(time.time())))
        groups = [
            GroupInfo(group.decode(), pattern.decode(), int(members), int(backlog))
            for pattern, group, members, backlog in rows
        ]
        return sorted(groups, key=lambda info: (info.group, info.pattern))

    async def purge_group(self, group: str, pattern: str) -> int:
        dropped = await self._command_pipe().call(
            self._scripts.purge.call(pattern.encode(), group.encode(), b"%d" % int(time.time()))
        )
        return int(dropped)

    async def delete_group(self, group: str, pattern: str) -> bool:
        try:
            deleted = await self._command_pipe().call(
                self._scripts.delete.call(pattern.encode(), group.encode(), b"%d" % int(time.time()))
            )
        except ResponseError as error:
            if not str(error).startswith("AMBINUSE"):
                raise
            members = str(error).split()[-1]
            raise GroupInUseError(
                f"group {group!r} on {pattern!r} has {members} running members: stop them before deleting it"
            ) from None
        return bool(deleted)

    def _command_pipe(self) -> CommandPipe:
        if self._pipe is None:
            raise BrokerUnavailableError(f"{self._link.name}: the adapter is not connected")
        return self._pipe

    # -- group upkeep -----------------------------------------------------------------------

    async def _tick(self) -> None:
        """While this adapter has grouped subscriptions: keep their registrations fresh, remove
        groups no member joined for their ``group_expiry``, take over entries of dead consumers and trim
        what every group acknowledged."""
        interval = self._claim_idle / 2
        while self._consumers:
            await asyncio.sleep(interval)
            pipe = self._pipe
            if pipe is None:
                break
            if not pipe.connected or not self._link.up:
                continue
            try:
                for consumer in self._consumers.values():
                    consumer.refresh()
                patterns = {consumer.pattern.encode() for consumer in self._consumers.values()}
                at_least = b"%d" % self._stream_maxlen  # a stream is trimmed once it reaches its cap
                pipe.send(self._scripts.trim.call(at_least, *sorted(patterns)), None, False)
                pipe.send(self._scripts.sweep.call(b"%d" % int(time.time())), None, False)
            except BrokerUnavailableError:
                break  # closing
        self._ticker = None


#: The id of an envelope written by `amb_core.adapter.encode` (it comes first, after the mark).
_ENVELOPE_ID = re.compile(rb'\{"amb":1,"id":"((?:[^"\\]|\\.)*)"')


def _log_unsent(commands: list[bytes], name: str) -> None:
    """Log what the adapter closed without having sent, or without an answer: the ids of the
    messages among it (each may or may not have reached Redis), and how many acknowledgements
    (those entries are delivered again)."""
    if not commands:
        return
    ids = [found.group(1).decode("utf-8", "replace") for found in map(_ENVELOPE_ID.search, commands) if found]
    acknowledgements = len(commands) - len(ids)
    if ids:
        logger.error(
            "%d messages published through %s were not confirmed by Redis when the adapter closed (they may "
            "not have arrived): ids %s%s",
            len(ids),
            name,
            ", ".join(ids[:20]),
            f" ... {ids[-1]} (all ids at DEBUG)" if len(ids) > 20 else "",
        )
        logger.debug("ids of the messages not confirmed: %s", " ".join(ids))
    if acknowledgements:
        logger.warning(
            "%d acknowledgements or group commands had not reached %s when the adapter closed: entries not "
            "acknowledged are delivered again",
            acknowledgements,
            name,
        )
