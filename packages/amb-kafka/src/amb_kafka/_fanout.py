"""Ungrouped subscriptions: one consumer per adapter reads every partition they need, without
joining a consumer group, and hands each record to the subscriptions that want it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import ConsumerStoppedError  # type: ignore[import-untyped]

from amb_core.adapter import (
    AMBError,
    InvalidMessageError,
    RouteTable,
    Subscription,
    backoff_delays,
    decode,
    log_invalid,
)
from amb_kafka._admin import TopicAdmin
from amb_kafka._complaints import complain, unexpected
from amb_kafka._errors import MAPPED, Boundary
from amb_kafka._fetching import keep_fetching
from amb_kafka._naming import topic_regex, wildcard

if TYPE_CHECKING:
    from amb_kafka._health import Health

logger = logging.getLogger("amb.kafka")

#: Every fan-out reader of this process, so a topic created here is discovered at once.
_readers: weakref.WeakSet[FanoutReader] = weakref.WeakSet()


def topic_created() -> None:
    """A topic was just created in this process: wildcard subscriptions look at once instead of
    waiting for their next periodic look."""
    for reader in list(_readers):
        reader.poke()


class _Reader:
    """What the fan-out consumer knows of one subscription."""

    __slots__ = ("active", "cursors", "regex", "subscription")

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.regex: re.Pattern[str] | None = (
            topic_regex(subscription.pattern) if wildcard(subscription.pattern) else None
        )
        #: Next offset this subscription takes from each partition. Records below it were
        #: published before it subscribed, or were already handed over (the consumer re-reads
        #: a partition after a reassignment, and several subscriptions share one position).
        self.cursors: dict[TopicPartition, int] = {}
        self.active = True

    def wants(self, topic: str) -> bool:
        if self.regex is not None:
            return self.regex.match(topic) is not None
        return topic == self.subscription.pattern


class FanoutReader:
    """A manually assigned consumer shared by a set of ungrouped subscriptions.

    Sharing one consumer keeps connections and fetches per bus constant, and hands a record to
    every interested subscription in one pass. ``subscribe`` fixes each new subscription's
    start at the partitions' end offsets before it returns; partitions that appear later
    (topics created after a wildcard subscription) are read from their beginning.
    """

    def __init__(
        self,
        name: str,
        consumer_options: dict[str, Any],
        admin: TopicAdmin,
        discovery_interval: float,
        create_topic: Callable[[str, int | None], Awaitable[object]],
        health: Health,
        boundary: Boundary,
    ) -> None:
        self._name = name
        self._health = health
        self._boundary = boundary
        self._options = consumer_options
        self._admin = admin
        self._interval = discovery_interval
        self._create_topic = create_topic
        self._consumer: Any = None
        self._readers: dict[str, _Reader] = {}
        #: Which subscriptions a topic's records go to: found in O(segments) of the topic, and
        #: a subscription coming or going changes only what it touches (amb_core.adapter.RouteTable).
        self._routes: RouteTable[_Reader] = RouteTable()
        self._assigned: set[TopicPartition] = set()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        _readers.add(self)

    def __len__(self) -> int:
        return len(self._readers)

    def poke(self) -> None:
        if self._watcher is not None:
            self._wake.set()

    async def add(self, subscription: Subscription, *, partitions: int | None = None) -> None:
        """Start feeding ``subscription``; return once its start offsets are fixed."""
        reader = _Reader(subscription)
        async with self._lock:
            consumer = await self._ensure_consumer()
            if reader.regex is None:
                await self._create_topic(subscription.pattern, partitions)
                counts = {subscription.pattern: await self._admin.partition_count(subscription.pattern)}
            else:
                counts = {t: n for t, n in (await self._admin.topic_partitions()).items() if reader.wants(t)}
            wanted = {TopicPartition(topic, p) for topic, count in counts.items() for p in range(count)}
            fresh = wanted - self._assigned
            self._reassign(self._assigned | wanted, hold=fresh)
            if wanted:
                try:
                    with self._boundary(f"reading the end offsets of {subscription.pattern!r}"):
                        ends = await consumer.end_offsets(list(wanted))
                except AMBError:
                    self._reassign(self._assigned - fresh)
                    raise
                reader.cursors.update(ends)
                for tp in fresh:
                    consumer.seek(tp, ends[tp])
                consumer.resume(*fresh)
            self._readers[subscription.id] = reader
            self._routes.add(subscription.pattern, reader)
            if reader.regex is not None and self._watcher is None:
                self._watcher = asyncio.ensure_future(self._watch())

    async def remove(self, subscription: Subscription) -> None:
        """Stop feeding ``subscription`` (idempotent)."""
        reader = self._readers.pop(subscription.id, None)
        if reader is None:
            return
        reader.active = False
        self._routes.remove(subscription.pattern, reader)
        async with self._lock:
            if not self._readers:
                await self.close()
                return
            keep = {tp for other in self._readers.values() for tp in other.cursors}
            if keep != self._assigned:
                self._reassign(keep)

    async def close(self) -> None:
        for task in (self._watcher, self._task):
            if task is not None:
                task.cancel()
        for task in (self._watcher, self._task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._watcher = self._task = None
        consumer, self._consumer = self._consumer, None
        self._assigned = set()
        if consumer is not None:
            await _stop_quietly(consumer, self._name)

    async def _ensure_consumer(self) -> Any:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**self._options)
            self._health.watch(consumer._client)
            try:
                with self._boundary(f"starting the {self._name} consumer"):
                    await consumer.start()
            except BaseException:
                await _stop_quietly(consumer, self._name)
                raise
            keep_fetching(consumer, f"the {self._name} consumer")
            self._consumer = consumer
            self._task = asyncio.ensure_future(self._dispatch(consumer))
        return self._consumer

    def _reassign(
        self,
        wanted: set[TopicPartition],
        *,
        hold: set[TopicPartition] | None = None,
        rewind: set[TopicPartition] | None = None,
    ) -> None:
        """Assign ``wanted``. A new assignment loses every position, so each partition goes back
        to the lowest cursor any subscription has on it (as do those in ``rewind``). Partitions
        in ``hold`` stay paused until the caller has positioned them."""
        consumer = self._consumer
        hold = hold or set()
        if wanted != self._assigned:
            consumer.assign(list(wanted))
            self._assigned = set(wanted)
            reposition = wanted - hold
        else:
            reposition = rewind or set()
        if hold:
            consumer.pause(*hold)
        for tp in reposition:
            starts = [reader.cursors[tp] for reader in self._readers.values() if tp in reader.cursors]
            if starts:
                consumer.seek(tp, min(starts))

    async def _dispatch(self, consumer: Any) -> None:
        """Fetch and hand records over, for as long as the reader runs. Nothing stops this loop
        but `close`: fetch errors are retried with backoff, and an unexpected error is logged
        and the records not handed over yet are read again."""
        delays = backoff_delays()
        table = self._routes
        routes = table.routes
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except ConsumerStoppedError:
                return
            except Exception as error:
                if isinstance(error, MAPPED):
                    self._health.suspect(f"the {self._name} consumer could not fetch")
                    complain(
                        self._health.link,
                        f"fanout:{self._name}:fetch",
                        "the %s consumer could not fetch, retrying: %s",
                        self._name,
                        self._boundary.reason(error),
                    )
                else:
                    unexpected(
                        self._name, "the %s consumer: fetching failed, retrying", self._name, error=error
                    )
                await asyncio.sleep(next(delays))
                continue
            delays = backoff_delays()
            pending = [tp for tp, records in batches.items() if records]
            try:
                while pending:
                    tp = pending[0]
                    records = batches[tp]
                    cached = routes.get(tp.topic)
                    if cached is not None and cached[0] == table.generation:
                        route = cached[1]
                    else:
                        route = table.route(tp.topic)
                    if len(route) == 1:
                        await self._hand_over(route[0], tp, records)
                    elif route:
                        await self._hand_over_shared(route, tp, records)
                    pending.pop(0)
            except Exception as error:
                unexpected(
                    self._name,
                    "the %s consumer: handing records over failed; they are read again",
                    self._name,
                    error=error,
                )
                self._rewind(set(pending))
                await asyncio.sleep(next(delays))

    def _rewind(self, partitions: set[TopicPartition]) -> None:
        """Fetch ``partitions`` again from the lowest cursor any subscription has on them."""
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._reassign(self._assigned, rewind=partitions & self._assigned)

    # The fetched records of a partition are in offset order and are all handed over here, even
    # if the consumer is repositioned meanwhile, so each cursor moves past them before the first
    # await: a reassignment then resumes after them instead of fetching them again. Should a
    # record fail to be handed over, the cursors go back to it (see `_dispatch`).

    @staticmethod
    async def _hand_over(reader: _Reader, tp: TopicPartition, records: list[Any]) -> None:
        """Records of ``tp`` to its only subscription: the common case, kept lean."""
        start = reader.cursors.get(tp)
        if start is None or records[-1].offset < start or not reader.active:
            return
        reader.cursors[tp] = records[-1].offset + 1
        subscription = reader.subscription
        receive = subscription.receive
        topic = tp.topic
        record = records[0]
        try:
            for record in records:
                if record.offset < start:
                    continue  # read again after a reassignment; already handed over
                waiting = receive(record.value or b"", topic)
                if waiting is not None:
                    await waiting
                    if not reader.active:
                        return
        except Exception:
            reader.cursors[tp] = max(start, record.offset)
            raise

    @staticmethod
    async def _hand_over_shared(readers: tuple[_Reader, ...], tp: TopicPartition, records: list[Any]) -> None:
        """Records of ``tp`` to several subscriptions, each from its own cursor; decoded once."""
        last = records[-1].offset
        takers: list[tuple[_Reader, int]] = []
        for reader in readers:
            start = reader.cursors.get(tp)
            if start is not None and start <= last and reader.active:
                takers.append((reader, start))
                reader.cursors[tp] = last + 1
        if not takers:
            return
        topic = tp.topic
        record, failing = records[0], takers[0][0]
        try:
            for record in records:
                offset = record.offset
                message: Any = None
                for failing, start in takers:
                    if offset < start or not failing.active:
                        continue
                    if message is None:
                        try:
                            message = decode(record.value or b"")
                        except InvalidMessageError as error:
                            log_invalid(topic, error)  # once, for every subscription
                            break
                    subscription = failing.subscription
                    if not subscription.offer(message):
                        await subscription.deliver(message)
        except Exception:
            # ``failing`` did not take ``record``, those before it in ``takers`` did: it and
            # what follows are read again.
            took = True
            for reader, start in takers:
                took = took and reader is not failing
                reader.cursors[tp] = max(start, record.offset + (1 if took else 0))
            raise

    async def _watch(self) -> None:
        """Look for new topics and partitions for the wildcard subscriptions."""
        while any(reader.regex is not None for reader in self._readers.values()):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                counts = await self._admin.topic_partitions()
                async with self._lock:
                    if self._consumer is not None:
                        self._discover(counts)
            except AMBError as error:
                logger.debug("topic discovery for the %s consumer failed: %s", self._name, error)
            except Exception as error:  # never a silently dead watcher
                unexpected(
                    f"{self._name}:watch", "the %s consumer: topic discovery failed", self._name, error=error
                )
        self._watcher = None

    def _discover(self, counts: dict[str, int]) -> None:
        found: set[TopicPartition] = set()
        for reader in self._readers.values():
            if reader.regex is None:
                continue
            for topic, count in counts.items():
                if not reader.wants(topic):
                    continue
                for partition in range(count):
                    tp = TopicPartition(topic, partition)
                    if tp not in reader.cursors:
                        # It appeared after the subscription, so all of it is news.
                        reader.cursors[tp] = 0
                        found.add(tp)
        if found:
            logger.debug("the %s consumer discovered %s", self._name, sorted(found))
            self._reassign(self._assigned | found, rewind=found)


async def _stop_quietly(consumer: Any, name: str) -> None:
    try:
        await consumer.stop()
    except Exception as error:
        logger.debug("closing the %s consumer: %s", name, error)
