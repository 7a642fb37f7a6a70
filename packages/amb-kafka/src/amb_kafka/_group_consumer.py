"""Grouped subscriptions: each is a member of a Kafka consumer group, committing only what its
handlers finished. The bus decides about retries and dead letters; `KafkaDelivery` carries its
decisions out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
)

from amb_core.adapter import (
    AMBError,
    BrokerUnavailableError,
    Subscription,
    TaskSet,
    backoff_delays,
    note_backlog,
)
from amb_kafka._admin import TopicAdmin
from amb_kafka._complaints import complain, unexpected
from amb_kafka._dead_letters import DeadLetters
from amb_kafka._delivery import KafkaDelivery
from amb_kafka._errors import MAPPED, Boundary
from amb_kafka._fetching import keep_fetching
from amb_kafka._lifetime import Groups, stamped
from amb_kafka._naming import group_id, topic_regex, wildcard
from amb_kafka._offsets import PartitionTracker

if TYPE_CHECKING:
    from amb_kafka._health import Health

logger = logging.getLogger("amb.kafka")

#: What aiokafka raises when a rebalance overtakes a member taking its partitions.
_REBALANCED = (CommitFailedError, IllegalStateError, ConsumerStoppedError)

#: Seconds a leaving member waits to read its committed offsets back (see `_stamp_positions`).
_STAMP_TIMEOUT = 5.0

#: Wildcard group members of this process, so a topic created here is discovered at once.
_wildcard_members: weakref.WeakSet[GroupConsumer] = weakref.WeakSet()


def topic_created() -> None:
    for member in list(_wildcard_members):
        member.poke()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Rebalance callbacks of one member's consumer. They may run while the member is leaving
    (a rebalance completing as its consumer closes), so they are given that consumer rather than
    looking it up, and whatever they raise is the member's to report, not aiokafka's."""

    def __init__(self, member: GroupConsumer, consumer: Any) -> None:
        self._member = member
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self._member.revoked(self._consumer, revoked)
        except Exception as error:
            self._member.rebalance_failed("giving its partitions up", error)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self._member.assigned(self._consumer, assigned)
        except Exception as error:
            self._member.rebalance_failed("taking its partitions", error)


class GroupConsumer:
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
        health: Health,
        boundary: Boundary,
        *,
        join_timeout: float,
        discovery_interval: float,
        lifetime: Groups,
        group_expiry: float,
    ) -> None:
        assert subscription.group is not None
        self.subscription = subscription
        self.group_id = group_id(subscription.group, subscription.pattern)
        self.dead_letters = dead_letters
        self._health = health
        self._boundary = boundary
        self._options = consumer_options
        self._admin = admin
        self._join_timeout = join_timeout
        self._lifetime = lifetime
        self._expiry = group_expiry
        self._discovery_ms = int(discovery_interval * 1000)
        self._consumer: Any = None
        self._known_topics: set[str] = set()
        self._trackers: dict[TopicPartition, PartitionTracker] = {}
        self._to_commit: dict[TopicPartition, int] = {}
        self._commit_wanted = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Records being delivered again (see `retry`).
        self._retries = TaskSet(f"group {self.group_id}")
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
            # Joined before the broker's metadata has a new topic, a member would be assigned
            # none of its partitions until the next metadata refresh (minutes).
            await self._admin.partition_count(pattern)
            self._known_topics = {pattern}
        group = self.subscription.group
        assert group is not None
        # An expired group is deleted first: nobody joins its backlog (amb_kafka._lifetime).
        backlog = await self._lifetime.before_joining(group, pattern)
        consumer = AIOKafkaConsumer(**options)
        self._health.watch(consumer._client)
        try:
            with self._boundary(f"starting the consumer of group {self.group_id}"):
                await consumer.start()
        except BaseException:
            await _stop_quietly(consumer)
            raise
        keep_fetching(consumer, f"group {self.group_id}")
        self._consumer = consumer
        listener = _Listener(self, consumer)
        if wildcard(pattern):
            consumer.subscribe(pattern=regex.pattern, listener=listener)
            _wildcard_members.add(self)
        else:
            consumer.subscribe([pattern], listener=listener)
        self._tasks = [
            asyncio.ensure_future(self._consume(consumer)),
            asyncio.ensure_future(self._commit_loop()),
        ]
        try:
            await asyncio.wait_for(self._ready.wait(), self._join_timeout)
            note_backlog(self._boundary.name, group, pattern, backlog)
        except BaseException as error:
            await self.stop(drain=0)
            if isinstance(error, asyncio.TimeoutError):
                raise BrokerUnavailableError(
                    f"{self._boundary.name}: could not join consumer group {self.group_id!r} "
                    f"within join_timeout ({self._join_timeout} s)"
                ) from None
            raise

    # ---------------------------------------------------------------- rebalancing

    async def assigned(self, consumer: Any, assigned: set[TopicPartition]) -> None:
        if self._stopping or consumer is not self._consumer:
            # A rebalance that completed while this member was leaving: the partitions are not
            # read any more, so there is nothing to position (and the consumer may be closing).
            return
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
                    await self._position(consumer, assigned)
                except Exception as error:
                    if (
                        self._stopping
                        or isinstance(error, _REBALANCED)
                        or not consumer.assignment() >= assigned
                    ):
                        # The group rebalanced meanwhile (aiokafka may then assert that there
                        # is an assignment), or this member is leaving: the next generation's
                        # assignment comes with its own call.
                        logger.debug(
                            "group %s rebalanced while taking its partitions: %r", self.group_id, error
                        )
                        return
                    if not isinstance(error, MAPPED):
                        raise  # a bug: reported by the listener
                    if attempt >= 5:
                        self._complain("could not position its partitions", error)
                        return
                    await asyncio.sleep(delay)
                else:
                    self._ready.set()
                    return
        finally:
            if not self._stopping and consumer.assignment() >= assigned:
                consumer.resume(*assigned)

    def rebalance_failed(self, doing: str, error: Exception) -> None:
        if self._stopping:
            logger.debug("group %s, leaving, failed %s: %r", self.group_id, doing, error)
        else:
            unexpected(self.group_id, "group %s failed %s", self.group_id, doing, error=error)

    async def _position(self, consumer: Any, assigned: set[TopicPartition]) -> None:
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
        await consumer.commit(stamped(positions, self._expiry))

    async def revoked(self, consumer: Any, revoked: set[TopicPartition]) -> None:
        if consumer is self._consumer:
            await self._commit(only=revoked)
        for tp in revoked:
            tracker = self._trackers.pop(tp, None)
            if tracker is not None:
                tracker.active = False
            self._to_commit.pop(tp, None)

    # ---------------------------------------------------------------- consuming

    async def _consume(self, consumer: Any) -> None:
        """Fetch and hand records to the subscription, for as long as the member runs. Nothing
        stops this loop but the member's end: fetch errors are retried with backoff, and an
        unexpected error is logged and the records not handed over yet are read again."""
        delays = backoff_delays()
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except ConsumerStoppedError:
                return
            except MAPPED as error:
                self._health.suspect(f"group {self.group_id} could not fetch")
                self._complain("could not fetch, retrying", error)
                await asyncio.sleep(next(delays))
                continue
            except Exception as error:
                unexpected(self.group_id, "group %s: fetching failed, retrying", self.group_id, error=error)
                await asyncio.sleep(next(delays))
                continue
            try:
                await self._hand_over(consumer, batches)
            except Exception as error:
                unexpected(
                    self.group_id,
                    "group %s: handing records over failed; they are read again",
                    self.group_id,
                    error=error,
                )
                await asyncio.sleep(next(delays))
                continue
            delays = backoff_delays()

    async def _hand_over(self, consumer: Any, batches: dict[TopicPartition, list[Any]]) -> None:
        receive = self.subscription.receive
        trackers = self._trackers
        pending = list(batches.items())
        while pending:
            tp, records = pending[0]
            tracker = trackers.get(tp)
            if tracker is not None:
                topic = tp.topic
                add = tracker.add
                for record in records:
                    if not tracker.active:
                        break
                    offset = record.offset
                    add(offset)
                    try:
                        waiting = receive(
                            record.value or b"", topic, KafkaDelivery(self, tp, tracker, record)
                        )
                        if waiting is not None:
                            await waiting
                    except Exception:
                        # Whatever went wrong, the records from this one on are read again
                        # rather than skipped (and never committed past).
                        tracker.forget(offset)
                        rest = [later for later in records if later.offset >= offset]
                        self._rewind(consumer, [(tp, rest), *pending[1:]])
                        raise
            pending.pop(0)

    def _rewind(self, consumer: Any, pending: list[tuple[TopicPartition, list[Any]]]) -> None:
        for tp, records in pending:
            if records and tp in self._trackers:
                with contextlib.suppress(IllegalStateError, ValueError):
                    consumer.seek(tp, records[0].offset)

    def finish(self, tp: TopicPartition, tracker: PartitionTracker, offset: int) -> None:
        if tracker.active and tracker.finish(offset):
            self._to_commit[tp] = tracker.position  # type: ignore[assignment]
            self._commit_wanted.set()

    def retry(self, delivery: KafkaDelivery) -> None:
        """Deliver the record again, here, as the next attempt."""
        if self._stopping or not delivery.tracker.active:
            return  # left uncommitted: the group reads it again
        self._retries.start(self._redeliver(delivery))

    async def _redeliver(self, delivery: KafkaDelivery) -> None:
        record = delivery.record
        again = KafkaDelivery(self, delivery.tp, delivery.tracker, record, delivery.attempt + 1)
        waiting = self.subscription.receive(record.value or b"", delivery.tp.topic, again)
        if waiting is not None:
            await waiting

    # ---------------------------------------------------------------- committing

    async def _commit_loop(self) -> None:
        # One commit in flight at a time; what finishes meanwhile goes out with the next.
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            try:
                await self._commit()
            except Exception as error:  # never a silently dead committer
                unexpected(self.group_id, "group %s: committing failed, retrying", self.group_id, error=error)
                await asyncio.sleep(1.0)
                self._commit_wanted.set()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        pending = self._to_commit
        offsets = {tp: offset for tp, offset in pending.items() if only is None or tp in only}
        if not offsets or self._consumer is None:
            return
        for tp in offsets:
            del pending[tp]
        try:
            await self._consumer.commit(stamped(offsets, self._expiry))
        except (CommitFailedError, IllegalStateError) as error:
            # The partitions moved to another member, which re-reads from the last commit.
            logger.debug("group %s could not commit %s: %s", self.group_id, offsets, error)
        except MAPPED as error:
            for tp, offset in offsets.items():
                if tp in self._trackers and pending.get(tp, -1) < offset:
                    pending[tp] = offset
            if only is not None:
                return  # a revocation: the next owner reads from the last commit
            self._health.suspect(f"group {self.group_id} could not commit")
            self._complain("could not commit offsets, will retry", error)
            link = self._health.link
            if not link.up:
                with contextlib.suppress(AMBError):
                    await link.wait_up(None)
            else:
                await asyncio.sleep(0.5)
            self._commit_wanted.set()

    def _complain(self, what: str, error: BaseException) -> None:
        reason = self._boundary.reason(error)
        complain(
            self._health.link, f"group:{self.group_id}:{what}", "group %s %s: %s", self.group_id, what, reason
        )

    # ---------------------------------------------------------------- leaving

    async def _stamp_positions(self) -> None:
        """Commit again, with the time, what this member has committed of the partitions it
        holds and has nothing new for: the group's ``group_expiry`` counts from the last member
        leaving (see amb_kafka._lifetime)."""
        consumer = self._consumer
        if consumer is None:
            return
        quiet = [tp for tp in self._trackers if tp not in self._to_commit]
        if not quiet:
            return
        # Bounded: a member leaving during an outage must not wait for the broker here.
        with contextlib.suppress(asyncio.TimeoutError):
            committed = await asyncio.wait_for(
                asyncio.gather(*(consumer.committed(tp) for tp in quiet)), _STAMP_TIMEOUT
            )
            for tp, offset in zip(quiet, committed, strict=True):
                if offset is not None and tp not in self._to_commit:
                    self._to_commit[tp] = offset

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
            with contextlib.suppress(*MAPPED, *_REBALANCED):
                await self._stamp_positions()
                await self._commit()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await _stop_quietly(consumer)


async def _stop_quietly(consumer: Any) -> None:
    try:
        await consumer.stop()
    except Exception as error:
        logger.debug("closing a Kafka consumer: %s", error)
