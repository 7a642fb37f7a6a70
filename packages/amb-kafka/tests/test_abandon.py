"""Abandoning a producer (what close and a producer replacement do once the broker stops
answering) must not trip aiokafka's own bookkeeping. aiokafka 0.14 removes a batch from its
pending set when the batch ends; a batch that a retriable error (NotLeaderForPartition on a
fresh reply inbox, say) put back in the queue has left that set already, so failing it raised
``KeyError`` in a callback: the contract suite saw it at a bus's close."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from amb_kafka._broker import _abandon
from conftest import BOOTSTRAP

pytestmark = pytest.mark.anyio


async def test_abandoning_a_producer_that_holds_a_batch_sent_back_for_a_retry_raises_nothing() -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)  # never started: its queue is enough
    accumulator = producer._message_accumulator
    builder = accumulator.create_builder()
    builder.append(key=None, value=b"reply", timestamp=None)
    partition = TopicPartition("_amb.inbox.gone", 0)
    accumulator._append_batch(builder, partition)
    batch = accumulator._pop_batch(partition)  # in a produce request, as the sender does
    accumulator.reenqueue(batch)  # the request failed with a retriable error
    loop = asyncio.get_running_loop()
    raised: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: raised.append(context))
    try:
        await _abandon(producer)
        for _ in range(3):  # the batch's done-callbacks run on the next iterations
            await asyncio.sleep(0)
        assert batch.future.done()
        # What asyncio says of a failure nobody read, it says when the future goes.
        del batch, builder, accumulator, producer
        gc.collect()
        assert raised == []
    finally:
        loop.set_exception_handler(previous)
