"""Grouped subscriptions: each is a member of a Kafka consumer group, committing only what its
handlers finished, retrying failures and dead-lettering what keeps failing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
)

from amb_core.backoff import backoff_delays
from amb_core.errors import BrokerUnavailableError
from amb_core.message import Message
from amb_core.subscription import Subscription
from amb_core.wire import decode_or_log
from amb_kafka.admin import TopicAdmin
from amb_kafka.deadletter import DeadLetters
from amb_kafka.naming import group_id, topic_regex, wildcard
from amb_kafka.offsets import PartitionTracker

logger = logging.getLogger("amb")

#: Wildcard group members of this process, so a topic created here is discovered at once.
_wildcard_members: weakref.WeakSet[GroupMember] = weakref.WeakSet()


def topic_created() -> None:
    for member in list(_wildcard_members):
        member.poke()


class _Delivery:
    """The ``ack`` of one record handed to the bus: commit it, retry it, or dead-letter it."""

    __slots__ = ("attempt", "member", "message", "record", "tp", "tracker")

    def __init__(
        self,
        member: GroupMember,
        tp: TopicPartition,
        tracker: PartitionTracker,
        record: Any,
        message: Message,
    ) -> None:
        self.member = member
        self.tp = tp
        self.tracker = tracker
        self.record = record
        self.message = message
        self.attempt = 1

    async def __call__(self, ok: bool) -> None:
        member = self.member
        if ok:
            member.finish(self.tp, self.tracker, self.record.offset)
        elif self.attempt < member.max_attempts:
            self.attempt += 1
            member.retry(self)
        elif await member.dead_letters.write(self.record, member.group_id, self.attempt):
            member.finish(self.tp, self.tracker, self.record.offset)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, member: GroupMember) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._member.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._member.assigned(assigned)


class GroupMember:
    """One grouped subscription: a consumer in the group ``<group>.<pattern>``.

    A partition nobody in the group has committed yet starts at its end offset if its topic
    existed when this member subscribed, at its beginning otherwise (a topic created later,
    found by a wildcard), and that start is committed at once so every member agrees on it.
    """

    def __init__(
        self,
        subscription: Subscription,
        consumer_options: dict[str, Any],
        admin: TopicAdmin,
        dead_letters: DeadLetters,
        *,
        max_attempts: int,
        join_timeout: float,
        discovery_interval: float,
    ) -> None:
        assert subscription.group is not None
        self.subscription = subscription
        self.group_id = group_id(subscription.group, subscription.pattern)
        self.dead_letters = dead_letters
        self.max_attempts = max_attempts
        self._options = consumer_options
        self._admin = admin
        self._join_timeout = join_timeout
        self._discovery_ms = int(discovery_interval * 1000)
        self._consumer: Any = None
        self._known_topics: set[str] = set()
        self._trackers: dict[TopicPartition, PartitionTracker] = {}
        self._to_commit: dict[TopicPartition, int] = {}
        self._commit_wanted = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.Task[None]] = set()
        self._stopping = False

    def poke(self) -> None:
        consumer = self._consumer
        if consumer is not None and not self._stopping:
            consumer._client.force_metadata_update()

    async def start(self) -> None:
        """Join the group; return once this member has its partitions and their positions."""
        pattern = self.subscription.pattern
        options = dict(self._options, group_id=self.group_id, enable_auto_commit=False)
        if wildcard(pattern):
            regex = topic_regex(pattern)
            self._known_topics = {t for t in await self._admin.topic_partitions() if regex.match(t)}
            # aiokafka finds new topics for a pattern on its periodic metadata refresh.
            options.setdefault("metadata_max_age_ms", self._discovery_ms)
        else:
            await self._admin.create(pattern)
            self._known_topics = {pattern}
        consumer = AIOKafkaConsumer(**options)
        try:
            await consumer.start()
        except KafkaError as error:
            await consumer.stop()
            raise BrokerUnavailableError(
                f"could not start the Kafka consumer of {self.group_id}: {error}"
            ) from error
        self._consumer = consumer
        if wildcard(pattern):
            consumer.subscribe(pattern=regex.pattern, listener=_Listener(self))
            _wildcard_members.add(self)
        else:
            consumer.subscribe([pattern], listener=_Listener(self))
        self._tasks = [
            asyncio.ensure_future(self._consume(consumer)),
            asyncio.ensure_future(self._commit_loop()),
        ]
        try:
            await asyncio.wait_for(self._ready.wait(), self._join_timeout)
        except asyncio.TimeoutError:
            await self.stop(drain=0)
            raise BrokerUnavailableError(
                f"could not join Kafka consumer group {self.group_id!r} within {self._join_timeout} s"
            ) from None

    # ---------------------------------------------------------------- rebalancing

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        for tp in assigned:
            self._trackers[tp] = PartitionTracker()
        if not assigned:
            self._ready.set()
            return
        # Hold fetching until each partition has its position: the fetcher would otherwise
        # apply the reset policy to a partition nobody committed yet.
        consumer.pause(*assigned)
        try:
            for attempt, delay in enumerate(backoff_delays(0.1, 1.0)):
                try:
                    await self._position(assigned)
                except (CommitFailedError, IllegalStateError) as error:
                    logger.debug("group %s rebalanced while taking its partitions: %s", self.group_id, error)
                    return  # the next generation's assignment comes with its own call
                except KafkaError as error:
                    if attempt >= 5:
                        logger.warning("group %s could not position its partitions: %s", self.group_id, error)
                        return
                    await asyncio.sleep(delay)
                else:
                    self._ready.set()
                    return
        finally:
            if consumer.assignment() >= assigned:
                consumer.resume(*assigned)

    async def _position(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        partitions = list(assigned)
        committed = await asyncio.gather(*(consumer.committed(tp) for tp in partitions))
        starts = [tp for tp, offset in zip(partitions, committed, strict=True) if offset is None]
        if not starts:
            return
        existing = [tp for tp in starts if tp.topic in self._known_topics]
        ends = await consumer.end_offsets(existing) if existing else {}
        positions = {tp: ends.get(tp, 0) for tp in starts}
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        await consumer.commit(positions)

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        await self._commit(only=revoked)
        for tp in revoked:
            tracker = self._trackers.pop(tp, None)
            if tracker is not None:
                tracker.active = False
            self._to_commit.pop(tp, None)

    # ---------------------------------------------------------------- consuming

    async def _consume(self, consumer: Any) -> None:
        subscription = self.subscription
        offer = subscription.offer
        trackers = self._trackers
        delays = backoff_delays()
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except ConsumerStoppedError:
                return
            except KafkaError as error:
                logger.warning("consumer group %s failed to fetch, retrying: %s", self.group_id, error)
                await asyncio.sleep(next(delays))
                continue
            delays = backoff_delays()
            for tp, records in batches.items():
                tracker = trackers.get(tp)
                if tracker is None:
                    continue
                topic = tp.topic
                add = tracker.add
                for record in records:
                    if not tracker.active:
                        break
                    offset = record.offset
                    add(offset)
                    message = decode_or_log(record.value or b"", topic)
                    if message is None:
                        self.finish(tp, tracker, offset)
                        continue
                    delivery = _Delivery(self, tp, tracker, record, message)
                    if not offer(message, delivery):
                        await subscription.deliver(message, delivery)

    def finish(self, tp: TopicPartition, tracker: PartitionTracker, offset: int) -> None:
        if tracker.active and tracker.finish(offset):
            self._to_commit[tp] = tracker.position  # type: ignore[assignment]
            self._commit_wanted.set()

    def retry(self, delivery: _Delivery) -> None:
        if self._stopping:
            return  # left uncommitted: the group reads it again
        task = asyncio.ensure_future(self.subscription.deliver(delivery.message, delivery))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    # ---------------------------------------------------------------- committing

    async def _commit_loop(self) -> None:
        # One commit in flight at a time; what finishes meanwhile goes out with the next.
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            await self._commit()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        pending = self._to_commit
        offsets = {tp: offset for tp, offset in pending.items() if only is None or tp in only}
        if not offsets or self._consumer is None:
            return
        for tp in offsets:
            del pending[tp]
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The partitions moved to another member, which re-reads from the last commit.
            logger.debug("group %s could not commit %s: %s", self.group_id, offsets, error)
        except KafkaError as error:
            logger.warning("group %s could not commit offsets, will retry: %s", self.group_id, error)
            for tp, offset in offsets.items():
                if tp in self._trackers and pending.get(tp, -1) < offset:
                    pending[tp] = offset
            await asyncio.sleep(0.2)
            self._commit_wanted.set()

    # ---------------------------------------------------------------- leaving

    def stop_reading(self) -> None:
        """No record reaches the subscription after this."""
        self._stopping = True
        if self._tasks:
            self._tasks[0].cancel()
        for task in self._retries:
            task.cancel()

    async def stop(self, drain: float) -> None:
        """Leave the group, after at most ``drain`` seconds for handlers still running to
        finish so that their offsets are committed (the rest is read again by the group)."""
        self.stop_reading()
        _wildcard_members.discard(self)
        if drain > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.subscription.drain(), drain)
        if self._consumer is not None:
            await self._commit()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except KafkaError as error:
                logger.debug("closing the consumer of group %s: %s", self.group_id, error)
