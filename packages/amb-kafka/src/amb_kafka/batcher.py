"""Publishing through record batches this adapter fills itself.

aiokafka's per-message ``send`` creates a coroutine, a future and a metadata lookup for every
record; a publish here only appends to the open batch of its topic, and one task per topic
hands full (or lingered) batches to the producer. The producer's own batching is bypassed, so
``linger_ms`` and ``max_batch_size`` take effect here.

Records go straight into the batch's record builder (``BatchBuilder._builder``, aiokafka's
C ``DefaultRecordBatchBuilder``): its Python wrapper's ``append`` costs as much again per record.
The wrapper's record count, which the idempotent producer's sequence numbers come from, is set
when the batch is closed. Both are aiokafka internals, hence the upper bound on its version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from amb_core.errors import BrokerUnavailableError

logger = logging.getLogger("amb")

_NO_HEADERS: list[tuple[str, bytes]] = []
_MAX_IDLE_STATES = 4096


class _Batch:
    """One batch being filled: its records' message ids, and who waits for its confirmation."""

    __slots__ = ("append", "builder", "confirmation", "fire_and_forget", "ids")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        #: ``append(offset, timestamp, key, value, headers)``, None once the batch is full.
        self.append: Callable[[int, None, bytes, bytes, list[tuple[str, bytes]]], object] = (
            builder._builder.append
        )
        #: One per record, in record order: a record's offset in the batch is its index here.
        self.ids: list[str] = []
        self.fire_and_forget = False
        self.confirmation: asyncio.Future[None] | None = None

    def close(self) -> None:
        self.builder._relative_offset = len(self.ids)
        self.builder.close()

    def confirmed(self) -> asyncio.Future[None]:
        if self.confirmation is None:
            self.confirmation = asyncio.get_running_loop().create_future()
        return self.confirmation

    def settle(self, sent: asyncio.Future[Any]) -> None:
        error = sent.exception() if not sent.cancelled() else asyncio.CancelledError()
        if error is not None:
            self.fail(error)
        elif self.confirmation is not None and not self.confirmation.done():
            self.confirmation.set_result(None)

    def fail(self, error: BaseException, *, quietly: bool = False) -> None:
        if self.fire_and_forget and not quietly:
            logger.error(
                "%d messages were not delivered (%s ... %s): %s",
                len(self.ids),
                self.ids[0],
                self.ids[-1],
                error,
            )
        if self.confirmation is not None and not self.confirmation.done():
            self.confirmation.set_exception(
                BrokerUnavailableError(f"Kafka did not confirm the message: {error}")
            )


class _Partition:
    """The partition one topic's messages go to, its open batch and the task that sends it."""

    __slots__ = ("open", "partition", "sender", "taken", "topic", "untracked")

    def __init__(self, topic: str, partition: int, untracked: bool) -> None:
        self.topic = topic
        self.partition = partition
        #: Kept out of the producer's metadata topics (see `Batcher.add_topic`).
        self.untracked = untracked
        self.open: _Batch | None = None
        self.sender: asyncio.Task[None] | None = None
        #: Publishers waiting for a full open batch to be handed over.
        self.taken: asyncio.Future[None] | None = None


class Batcher:
    """Fills one batch per topic (each publisher writes a topic to one partition) and sends it."""

    def __init__(
        self,
        producer: Any,
        key: bytes,
        linger: float,
        max_request_size: int,
        exists: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._producer = producer
        self._exists = exists
        self._key = key
        self._linger = linger
        self._max_size = max_request_size
        self._partitions: dict[str, _Partition] = {}

    def knows(self, topic: str) -> bool:
        return topic in self._partitions

    def add_topic(self, topic: str, partition: int, *, untracked: bool = False) -> None:
        """Publish to ``topic`` on ``partition``. An ``untracked`` topic is dropped from the
        producer's metadata topics after each send: a reply inbox, which a broker with topic
        auto-creation would otherwise bring back on a metadata refresh after its bus deleted it."""
        if len(self._partitions) >= _MAX_IDLE_STATES:
            # Topics this publisher no longer writes to (replies to closed buses, say).
            for name, state in list(self._partitions.items()):
                if state.open is None and state.sender is None:
                    del self._partitions[name]
        self._partitions[topic] = _Partition(topic, partition, untracked)

    def forget(self, topic: str) -> None:
        self._partitions.pop(topic, None)

    def send(self, topic: str, value: bytes, message_id: str, confirm: bool) -> Awaitable[None] | None:
        """Append one record to ``topic`` (known via `add_topic`). Returns what to await: the
        confirmation of its batch with ``confirm``, room in a full batch, or None when the
        record is in (most fire-and-forget publishes: no coroutine, no task, no future)."""
        state = self._partitions[topic]
        batch = state.open
        if batch is None:
            batch = state.open = _Batch(self._producer.create_batch())
        if batch.append(len(batch.ids), None, self._key, value, _NO_HEADERS) is None:
            return self._send_to_next(state, value, message_id, confirm)
        batch.ids.append(message_id)
        if state.sender is None:
            state.sender = asyncio.ensure_future(self._drain(state))
        if confirm:
            return batch.confirmed()
        batch.fire_and_forget = True
        return None

    async def _send_to_next(self, state: _Partition, value: bytes, message_id: str, confirm: bool) -> None:
        batch = await self._next_batch(state, value, message_id)
        batch.ids.append(message_id)
        if state.sender is None:
            state.sender = asyncio.ensure_future(self._drain(state))
        if confirm:
            await batch.confirmed()
        else:
            batch.fire_and_forget = True

    async def _next_batch(self, state: _Partition, value: bytes, message_id: str) -> _Batch:
        """The open batch was full: wait until it is handed over, then start the next one."""
        if len(value) + len(self._key) + 128 > self._max_size:
            raise ValueError(
                f"message {message_id} is {len(value)} bytes, over the producer's max_request_size "
                f"of {self._max_size}"
            )
        while True:
            batch = state.open
            if batch is None:
                # The first record of a batch always fits.
                batch = state.open = _Batch(self._producer.create_batch())
                batch.append(0, None, self._key, value, _NO_HEADERS)
                return batch
            if batch.append(len(batch.ids), None, self._key, value, _NO_HEADERS) is not None:
                return batch
            if state.sender is None:
                state.sender = asyncio.ensure_future(self._drain(state))
            if state.taken is None:
                state.taken = asyncio.get_running_loop().create_future()
            await asyncio.shield(state.taken)

    async def _drain(self, state: _Partition) -> None:
        """Hand the open batch to the producer until none is left. ``send_batch`` waits while
        the partition's previous batch is still queued, and publishes meanwhile fill the next."""
        producer = self._producer
        try:
            if self._linger:
                await asyncio.sleep(self._linger)
            while state.open is not None:
                batch, state.open = state.open, None
                if state.taken is not None:
                    state.taken.set_result(None)
                    state.taken = None
                batch.close()
                if state.untracked and not await self._still_there(state):
                    logger.debug("dropped %d replies to %s: that bus has closed", len(batch.ids), state.topic)
                    batch.fail(BrokerUnavailableError(f"{state.topic} no longer exists"), quietly=True)
                    continue
                try:
                    sent = await producer.send_batch(batch.builder, state.topic, partition=state.partition)
                except KafkaError as error:
                    batch.fail(error)
                    continue
                finally:
                    if state.untracked:
                        producer.client._topics.discard(state.topic)
                sent.add_done_callback(batch.settle)
        except asyncio.CancelledError:
            if state.open is not None:
                state.open.fail(BrokerUnavailableError("the Kafka adapter closed"))
                state.open = None
            raise
        finally:
            state.sender = None

    async def _still_there(self, state: _Partition) -> bool:
        """Whether an untracked topic still exists. Once the producer's metadata has dropped
        it, sending would look it up again in a way that lets the broker auto-create it."""
        if self._producer.client.cluster.partitions_for_topic(state.topic) is not None:
            return True
        try:
            if await self._exists(state.topic):
                return True
        except KafkaError:
            return True  # cannot tell: sending is the lesser risk
        self._partitions.pop(state.topic, None)
        return False

    async def flush(self) -> None:
        """Hand every open batch to the producer (whose ``stop`` then sends them)."""
        senders = [state.sender for state in self._partitions.values() if state.sender is not None]
        if senders:
            await asyncio.gather(*senders, return_exceptions=True)
