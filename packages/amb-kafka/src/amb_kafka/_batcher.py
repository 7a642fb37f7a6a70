"""Publishing through record batches this adapter fills itself.

aiokafka's per-message ``send`` creates a coroutine, a future and a metadata lookup for every
record; a publish here only appends to the open batch of its topic, and one task per topic
hands full (or lingered) batches to the producer. The producer's own batching is bypassed, so
``linger_ms`` and ``max_batch_size`` take effect here.

Which partition a record goes to is decided here too, as Kafka's default partitioner would: a
message with a key goes to the partition its key hashes to (murmur2, like every Kafka client, so
a key's messages stay in order and other clients' records with that key land beside them); one
without a key goes to the topic's partitions in turn, so that a group's members share one
publisher's work: they stay on one partition while a batch fills (up to `SPREAD_RECORDS`) and
move on to the next partition with each new batch.

Records go straight into the batch's record builder (``BatchBuilder._builder``, aiokafka's
C ``DefaultRecordBatchBuilder``): its Python wrapper's ``append`` costs as much again per record.
The wrapper's record count, which the idempotent producer's sequence numbers come from, is set
when the batch is closed. Both are aiokafka internals, hence the upper bound on its version.

Nothing handed over is dropped silently. A batch keeps its records' values (the encoded
envelopes: bytes, which the garbage collector never scans, where keeping the `Message` objects
alive until the batch is settled would cost every collection; one append per record, as the
ids it kept before), so that when the producer has to be replaced (it failed, or the broker
refused a batch, which leaves a gap in the idempotent producer's sequence numbers that would get
every later batch refused), every batch it had not settled is built again and sent through the
new producer, in the original order (at least once). Ids, for log lines, are read back from
the values. A batch the broker refuses for good (too large, not authorized) fails its confirmed
publishers with that error and is logged with its ids; so is what is still unsent when the
adapter closes.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiokafka.errors import (  # type: ignore[import-untyped]
    DuplicateSequenceNumber,
    InvalidProducerEpoch,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from aiokafka.producer.message_accumulator import BatchBuilder  # type: ignore[import-untyped]
from pydantic_core import from_json

from amb_core.adapter import (
    AMBError,
    BrokerUnavailableError,
    Message,
    MessageTooLargeError,
    backoff_delays,
    encode,
)
from amb_kafka._errors import MAPPED, Boundary, is_unreachable

if TYPE_CHECKING:
    from amb_kafka._health import Health

logger = logging.getLogger("amb.kafka")

_NO_HEADERS: list[tuple[str, bytes]] = []
#: How every envelope `amb_core.adapter.encode` writes starts: its id follows.
_ID_AT = b'{"amb":1,"id":"'
_MAX_IDLE_STATES = 4096
#: Messages without a key stick to one partition for a batch (fewer, fuller batches), and move
#: on to the next when a new batch starts or this many records are in: a burst of one publisher
#: is spread in runs of this many, so a group's members share even a burst (at least 16% each
#: of 400 messages for 4 members over 8 partitions), as Kafka's own sticky partitioner does by
#: bytes.
SPREAD_RECORDS = 32
#: Keys whose partition a topic remembers (murmur2 is pure Python: a few microseconds a key).
_MAX_KEYS = 4096
#: Ids named in an ERROR line about undelivered messages (all of them go to DEBUG).
_IDS_SHOWN = 20
#: What the broker answers once a producer's sequence numbers are off: that producer is done
#: for, but the batch was not written, so it is sent again through a new one.
_PRODUCER_BROKEN = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
    DuplicateSequenceNumber,
)


def message_id(value: bytes) -> str:
    """The id in an envelope `amb_core.adapter.encode` wrote (it starts ``{"amb":1,"id":"``)."""
    if value.startswith(_ID_AT):
        end = value.find(b'"', len(_ID_AT))
        if end > 0:
            return value[len(_ID_AT) : end].decode(errors="replace")
    try:
        return str(from_json(value)["id"])
    except (ValueError, KeyError, TypeError):
        return "?"


def log_undelivered(values: list[bytes], topic: str, reason: object) -> None:
    """One ERROR line naming messages that will never be delivered (every id at DEBUG)."""
    ids = [message_id(value) for value in values]
    logger.error(
        "%d messages on %s were not delivered (%s): ids %s%s",
        len(ids),
        topic,
        reason,
        ", ".join(ids[:_IDS_SHOWN]),
        f" ... {ids[-1]} (all ids at DEBUG)" if len(ids) > _IDS_SHOWN else "",
    )
    logger.debug("ids of the messages not delivered on %s: %s", topic, " ".join(ids))


class _Batch:
    """One batch being filled: its records' values, and who waits for its confirmation."""

    __slots__ = (
        "append",
        "builder",
        "confirmation",
        "fire_and_forget",
        "keys",
        "moved",
        "sent",
        "seq",
        "values",
    )

    def __init__(self, builder: Any, seq: int, confirmation: asyncio.Future[None] | None = None) -> None:
        self.builder = builder
        #: ``append(offset, timestamp, key, value, headers)``, None once the batch is full.
        self.append: Callable[[int, None, bytes | None, bytes, list[tuple[str, bytes]]], object] = (
            builder._builder.append
        )
        #: One per record, in record order: a record's offset in the batch is its index here.
        self.values: list[bytes] = []
        #: The record keys by offset, for the records that have one (None: no record has).
        self.keys: dict[int, bytes] | None = None
        #: Its place among its partition's batches (a resend keeps it: resends go out in order).
        self.seq = seq
        self.fire_and_forget = False
        self.confirmation = confirmation
        #: Handed to a producer that has since been replaced: its outcome no longer counts.
        self.moved = False
        #: The producer's future for it, once handed over.
        self.sent: asyncio.Future[Any] | None = None

    def add(self, key: bytes | None, value: bytes) -> bool:
        """Append a record; False (nothing appended) if the batch is full."""
        offset = len(self.values)
        if self.append(offset, None, key, value, _NO_HEADERS) is None:
            return False
        self.values.append(value)
        if key is not None:
            self.note_key(offset, key)
        return True

    def note_key(self, offset: int, key: bytes) -> None:
        if self.keys is None:
            self.keys = {}
        self.keys[offset] = key

    def key(self, offset: int) -> bytes | None:
        keys = self.keys
        return None if keys is None else keys.get(offset)

    def close(self) -> None:
        self.builder._relative_offset = len(self.values)
        self.builder.close()

    def confirmed(self) -> asyncio.Future[None]:
        if self.confirmation is None:
            self.confirmation = asyncio.get_running_loop().create_future()
        return self.confirmation

    def succeeded(self) -> None:
        if self.confirmation is not None and not self.confirmation.done():
            self.confirmation.set_result(None)

    def failed(self, error: AMBError, topic: str, *, quietly: bool = False) -> None:
        """It will never be delivered: tell whoever waits, and log the others' ids."""
        if self.fire_and_forget and not quietly:
            log_undelivered(self.values, topic, error)
        if self.confirmation is not None and not self.confirmation.done():
            self.confirmation.set_exception(error)


class Topic:
    """Where one topic's messages go: its partitions, in turn for messages without a key."""

    __slots__ = ("by_key", "current", "next", "partitions", "topic")

    def __init__(self, topic: str, partitions: list[Partition]) -> None:
        self.topic = topic
        self.partitions = partitions
        #: Where messages without a key go now, and the index of the one after it.
        self.current = partitions[0]
        self.next = 1 % len(partitions)
        #: Record key -> its partition, as Kafka's default partitioner picks it.
        self.by_key: dict[bytes, Partition] = {}

    def advance(self) -> Partition:
        """Move messages without a key on to the next partition."""
        partitions = self.partitions
        index = self.next
        self.next = index + 1 if index + 1 < len(partitions) else 0
        state = self.current = partitions[index]
        return state

    def pick(self, key: bytes) -> Partition:
        """The partition of ``key``'s messages."""
        partitions = self.partitions
        state = self.by_key.get(key)
        if state is None:
            if len(self.by_key) >= _MAX_KEYS:
                self.by_key.clear()
            state = self.by_key[key] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        return state

    @property
    def idle(self) -> bool:
        return all(
            state.open is None and state.sender is None and not state.unsettled for state in self.partitions
        )

    def set_limit(self, limit: int, batch_size: int) -> None:
        for state in self.partitions:
            state.limit, state.batch_size = limit, batch_size


class Partition:
    """One partition of a topic: its open batch and the task that sends it."""

    __slots__ = (
        "batch_size",
        "limit",
        "next_seq",
        "open",
        "partition",
        "retry",
        "sender",
        "taken",
        "topic",
        "unsettled",
        "untracked",
    )

    def __init__(self, topic: str, partition: int, limit: int, batch_size: int, untracked: bool) -> None:
        self.topic = topic
        self.partition = partition
        #: The largest encoded envelope this topic takes (see `KafkaBroker.max_message_size`).
        self.limit = limit
        #: Bytes per batch: never more than the broker takes in one.
        self.batch_size = batch_size
        #: Kept out of the producer's metadata topics (see `Batcher.add_topic`).
        self.untracked = untracked
        self.open: _Batch | None = None
        self.next_seq = 0
        self.sender: asyncio.Task[None] | None = None
        #: Publishers waiting for a full open batch to be handed over.
        self.taken: asyncio.Future[None] | None = None
        #: Batches to send again (through a new producer) before `open`, by `seq`.
        self.retry: list[_Batch] = []
        #: Batches handed to the producer and not yet settled, oldest first.
        self.unsettled: deque[_Batch] = deque()


class Batcher:
    """Fills one batch per partition and sends it."""

    def __init__(
        self,
        producer: Any,
        linger: float,
        exists: Callable[[str], Awaitable[bool]],
        health: Health,
        boundary: Boundary,
        renew: Callable[[str], None],
        too_large: Callable[[str], None],
    ) -> None:
        self._producer = producer
        self._compression = producer._message_accumulator._compression_type
        self._exists = exists
        self._linger = linger
        self._health = health
        self._link = health.link
        self._boundary = boundary
        #: Asks the adapter for a new producer (see `switch`).
        self._renew = renew
        #: Tells the adapter that the broker refused a batch of a topic as too large.
        self._too_large = too_large
        #: Set while the producer is being replaced: nothing is handed over meanwhile.
        self._paused: asyncio.Future[None] | None = None
        self._closing = False
        #: Per topic; the adapter's publish looks its topic up here.
        self.topics: dict[str, Topic] = {}

    def add_topic(
        self, topic: str, partitions: list[int], limit: int, batch_size: int, *, untracked: bool = False
    ) -> Topic:
        """Publish to ``topic``'s ``partitions``. An ``untracked`` topic is dropped from the
        producer's metadata topics after each send: a reply inbox, which a broker with topic
        auto-creation would otherwise bring back on a metadata refresh after its bus deleted it."""
        if len(self.topics) >= _MAX_IDLE_STATES:
            # Topics this publisher no longer writes to (replies to closed buses, say).
            for name, known in list(self.topics.items()):
                if known.idle:
                    del self.topics[name]
        route = self.topics[topic] = Topic(
            topic, [Partition(topic, partition, limit, batch_size, untracked) for partition in partitions]
        )
        return route

    def _states(self) -> list[Partition]:
        return [state for route in self.topics.values() for state in route.partitions]

    def send(self, route: Topic, message: Message, confirm: bool) -> Awaitable[None] | None:
        """Append ``message`` to the open batch of its partition. Returns what to await: the
        confirmation of its batch with ``confirm``, room in a full batch, or None when the record
        is in (most fire-and-forget publishes: no coroutine, no task, no future). Raises
        `MessageTooLargeError` (nothing appended) above the topic's limit (less the key)."""
        key = message.key
        if key is None:  # the hot path
            state = route.current
            batch = state.open
            if batch is None or len(batch.values) >= SPREAD_RECORDS:
                state = route.advance()
            value = encode(message, state.limit)
            record_key = None
        else:
            record_key = key.encode()
            state = route.pick(record_key)
            # The key's bytes (and its length's second varint byte) take room from the value.
            value = encode(message, state.limit - len(record_key) - 1)
        batch = state.open
        if batch is None:
            batch = state.open = self._new_batch(state)
        values = batch.values
        if batch.append(len(values), None, record_key, value, _NO_HEADERS) is None:
            return self._send_to_next(state, record_key, value, confirm)
        values.append(value)
        if record_key is not None:
            batch.note_key(len(values) - 1, record_key)
        if state.sender is None:
            state.sender = asyncio.ensure_future(self._drain(state))
        if confirm:
            # Shielded: the batch's confirmation is shared by its confirmed publishers, and the
            # bus cancels one of them after outage_timeout without failing the others.
            return asyncio.shield(batch.confirmed())
        batch.fire_and_forget = True
        return None

    def _new_batch(self, state: Partition) -> _Batch:
        seq = state.next_seq
        state.next_seq = seq + 1
        return _Batch(BatchBuilder(state.batch_size, self._compression), seq)

    async def _send_to_next(self, state: Partition, key: bytes | None, value: bytes, confirm: bool) -> None:
        batch = await self._next_batch(state, key, value)
        if state.sender is None:
            state.sender = asyncio.ensure_future(self._drain(state))
        if confirm:
            await asyncio.shield(batch.confirmed())
        else:
            batch.fire_and_forget = True

    async def _next_batch(self, state: Partition, key: bytes | None, value: bytes) -> _Batch:
        """The open batch was full: wait until it is handed over, then start the next one. While
        the broker is unreachable the message is refused instead (`BrokerUnavailableError`,
        nothing appended), so that the bus keeps it."""
        while True:
            batch = state.open
            if batch is None:
                # The first record of a batch always fits (its size was checked by `encode`).
                batch = state.open = self._new_batch(state)
                batch.add(key, value)
                return batch
            if batch.add(key, value):
                return batch
            if state.sender is None:
                state.sender = asyncio.ensure_future(self._drain(state))
            if not self._link.up:
                raise self._link.unavailable()
            if state.taken is None:
                state.taken = asyncio.get_running_loop().create_future()
            await asyncio.wait((state.taken, self._health.outage()), return_when=asyncio.FIRST_COMPLETED)

    async def _drain(self, state: Partition) -> None:
        """Hand batches to the producer until none is left: resends first, then the open one.
        ``send_batch`` waits while the partition's previous batch is still queued, and
        publishes meanwhile fill the next."""
        batch: _Batch | None = None
        try:
            if self._linger:
                await asyncio.sleep(self._linger)
            while True:
                batch = None
                if state.retry:
                    batch = state.retry.pop(0)
                elif state.open is not None:
                    batch, state.open = state.open, None
                    if state.taken is not None:
                        state.taken.set_result(None)
                        state.taken = None
                    batch.close()
                else:
                    return
                if state.untracked and not await self._still_there(state):
                    logger.debug(
                        "dropped %d replies to %s: that bus has closed", len(batch.values), state.topic
                    )
                    batch.failed(
                        BrokerUnavailableError(f"{state.topic} no longer exists"), state.topic, quietly=True
                    )
                    continue
                await self._hand_over(state, batch)
        except asyncio.CancelledError:
            if batch is not None and not batch.moved:  # the one being handed over
                batch.failed(BrokerUnavailableError("the Kafka adapter closed"), state.topic)
            raise
        finally:
            state.sender = None

    async def _hand_over(self, state: Partition, batch: _Batch) -> None:
        """Give ``batch`` to the producer, which sends it and retries it for as long as it takes
        (idempotent: never twice, never out of order). Taken or not, it is never dropped for an
        outage: without the broker, the hand-over waits until it is back."""
        delays = None
        while True:
            if self._paused is not None:
                while self._paused is not None:
                    await asyncio.shield(self._paused)
                if state.retry and state.retry[0].seq < batch.seq:
                    # The new producer resends older batches first: this one goes after them.
                    bisect.insort(state.retry, batch, key=_seq)
                    return
            producer = self._producer
            try:
                sent = await producer.send_batch(batch.builder, state.topic, partition=state.partition)
            except MAPPED as error:
                if producer is not self._producer:
                    self._requeue(state, batch)  # replaced meanwhile: resent in order by the new one
                    return
                if not is_unreachable(error):
                    batch.failed(self._boundary.error(error, f"publishing to {state.topic}"), state.topic)
                    return
                # Not taken (the partition's previous batch has been waiting for the broker, or
                # there is no metadata): try again, once the broker answers if it does not.
                self._health.suspect(f"a batch for {state.topic} was not taken: {error}")
                if not self._link.up:
                    await self._link.wait_up(None)
                else:
                    delays = delays or backoff_delays()
                    await asyncio.sleep(next(delays))
                continue
            finally:
                if state.untracked:
                    producer.client._topics.discard(state.topic)
            if producer is not self._producer:
                # Taken by a producer that is being replaced: the new one sends it.
                self._requeue(state, batch)
                return
            state.unsettled.append(batch)
            batch.sent = sent
            sent.add_done_callback(lambda sent, batch=batch: self._settled(state, batch, sent))
            return

    def _settled(self, state: Partition, batch: _Batch, sent: asyncio.Future[Any]) -> None:
        # Read first, even when it no longer counts: a failure nobody reads is logged by asyncio
        # as "never retrieved" (the producer fails what it holds when it stops after `close`).
        error = asyncio.CancelledError() if sent.cancelled() else sent.exception()
        if batch.moved:
            return
        unsettled = state.unsettled
        if unsettled and unsettled[0] is batch:
            unsettled.popleft()
        elif batch in unsettled:
            unsettled.remove(batch)
        if error is None:
            batch.succeeded()
            return
        if self._closing:
            batch.failed(self._boundary.error(error, f"closing with messages for {state.topic}"), state.topic)
            return
        if isinstance(error, _PRODUCER_BROKEN) or is_unreachable(error) or not isinstance(error, MAPPED):
            # The broker did not write it, and this producer will not get it written: resent
            # through a new producer (with the batches after it, in order).
            self._requeue(state, batch)
            self._renew(f"a batch for {state.topic} failed: {self._boundary.reason(error)}")
            return
        # Refused for good (too large, not authorized): those waiting are told, the rest logged.
        # The producer's sequence numbers for the partition now have a gap, so the next batch
        # would be refused as out of order: a new producer takes over.
        failure = self._boundary.error(error, f"publishing to {state.topic}")
        batch.failed(failure, state.topic)
        if isinstance(failure, MessageTooLargeError):
            self._too_large(state.topic)
        self._renew(f"the broker refused a batch for {state.topic}: {self._boundary.reason(error)}")

    def _requeue(self, state: Partition, batch: _Batch) -> None:
        """Send ``batch``'s records again, in their order among the partition's batches."""
        batch.moved = True
        retry = _Batch(BatchBuilder(state.batch_size, self._compression), batch.seq, batch.confirmation)
        retry.fire_and_forget = batch.fire_and_forget
        extra: list[_Batch] = []
        for offset, value in enumerate(batch.values):
            key = batch.key(offset)
            target = extra[-1] if extra else retry
            if not target.add(key, value):
                # Building again can only shrink a batch (fresh timestamps), but never lose a record.
                target = _Batch(
                    BatchBuilder(state.batch_size, self._compression), batch.seq, batch.confirmation
                )
                target.fire_and_forget = batch.fire_and_forget
                target.add(key, value)
                extra.append(target)
        for part in (retry, *extra):
            part.close()
            # Equal seqs keep their order: insort puts each after the ones already there.
            bisect.insort(state.retry, part, key=_seq)
        if state.sender is None and not self._closing:
            state.sender = asyncio.ensure_future(self._drain(state))

    def pause(self) -> None:
        """Hand nothing over until `switch` (the producer is being replaced)."""
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()

    def switch(self, producer: Any) -> None:
        """Send through ``producer`` from now on. Every batch the old one had not settled is
        sent again through it, in order (the old one's outcomes are ignored from now on)."""
        self._producer = producer
        self._compression = producer._message_accumulator._compression_type
        for state in self._states():
            moved, state.unsettled = list(state.unsettled), deque()
            for batch in moved:
                self._requeue(state, batch)
        paused, self._paused = self._paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    async def _still_there(self, state: Partition, *, ask_broker: bool = False) -> bool:
        """Whether an untracked topic still exists. Once the producer's metadata has dropped
        it, sending would look it up again in a way that lets the broker auto-create it. With
        ``ask_broker``, the broker is asked even while that metadata still lists the topic
        (it may have been deleted since)."""
        if not ask_broker and self._producer.client.cluster.partitions_for_topic(state.topic) is not None:
            return True
        try:
            if await self._exists(state.topic):
                return True
        except AMBError:
            return True  # cannot tell: sending is the lesser risk
        self.topics.pop(state.topic, None)
        return False

    async def close(self, timeout: float) -> None:
        """Hand every batch to the producer and wait, at most ``timeout`` seconds, for the broker
        to confirm them. What is still unconfirmed then is failed and logged with its ids (the
        adapter then stops the producer, which would otherwise wait for the broker for good)."""
        self._closing = True
        paused, self._paused = self._paused, None  # a replacement that will not happen now
        if paused is not None and not paused.done():
            paused.set_result(None)
        states = self._states()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        senders = [state.sender for state in states if state.sender is not None]
        if senders and timeout > 0:
            await asyncio.wait(senders, timeout=timeout)
        if timeout > 0:
            await self._drop_replies_to_closed_buses(states)
        left = deadline - loop.time()
        unconfirmed = [batch.sent for state in states for batch in state.unsettled if batch.sent is not None]
        if left > 0 and unconfirmed:
            await asyncio.wait(unconfirmed, timeout=left)
        for state in states:
            if state.sender is not None:
                state.sender.cancel()
                await asyncio.gather(state.sender, return_exceptions=True)
            left_over = [*state.unsettled, *state.retry, *([state.open] if state.open is not None else [])]
            state.unsettled.clear()
            state.retry.clear()
            state.open = None
            for batch in left_over:
                batch.moved = True  # what the producer says about it later no longer counts
                batch.failed(
                    BrokerUnavailableError("the Kafka adapter closed before the broker confirmed it"),
                    state.topic,
                )

    async def _drop_replies_to_closed_buses(self, states: list[Partition]) -> None:
        """Give up, quietly, replies handed over for a reply inbox that has gone since (its bus
        closed): the producer would keep asking for the topic until `close` gives up on it."""
        for state in states:
            if not (state.untracked and state.unsettled) or await self._still_there(state, ask_broker=True):
                continue  # (or cannot tell: waited for like any other)
            logger.debug("dropped replies to %s: that bus has closed", state.topic)
            for batch in state.unsettled:
                batch.moved = True
                batch.failed(
                    BrokerUnavailableError(f"{state.topic} no longer exists"), state.topic, quietly=True
                )
            state.unsettled.clear()


def _seq(batch: _Batch) -> int:
    return batch.seq
