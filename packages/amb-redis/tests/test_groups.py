"""Grouped subscriptions on Streams consumer groups: redelivery, dead letters, hand-over,
take-over of dead consumers, and what the adapter leaves in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis.asyncio as redis

from amb_core import Message
from amb_core.wire import decode, encode
from conftest import WAIT, BusFactory, LogWaiter, Received, eventually

pytestmark = pytest.mark.anyio


def stream(topic: str) -> str:
    return f"amb:stream:{topic}"


async def test_a_failing_entry_is_retried_then_dead_lettered(
    make_bus: BusFactory, topic: str, admin: redis.Redis, log_waiter: Callable[[str], LogWaiter]
) -> None:
    bus = await make_bus(max_attempts=3)
    dead = log_waiter("dead-letter stream")
    got = Received()
    attempts: list[str] = []

    async def poisoned(message: Message) -> None:
        if message.payload["n"] == 0:
            attempts.append(message.id)
            raise RuntimeError("cannot handle this one")
        await got(message)

    await bus.subscribe(topic, poisoned, group="workers")
    poison_id = await bus.publish(topic, {"n": 0})
    await bus.publish(topic, {"n": 1})
    record = await dead.wait()
    await got.wait_for(1)
    assert attempts == [poison_id] * 3
    assert f"amb:dlq:{topic}:workers" in record.getMessage()
    entries: Any = await admin.xrange(f"amb:dlq:{topic}:workers")
    [(_, fields)] = entries
    assert decode(fields[b"message"]).id == poison_id
    assert (fields[b"group"], fields[b"attempts"], fields[b"stream"]) == (
        b"workers",
        b"3",
        stream(topic).encode(),
    )

    async def nothing_pending() -> bool:
        summary: Any = await admin.xpending(stream(topic), "workers")
        return bool(summary["pending"] == 0)

    await eventually(nothing_pending)
    await admin.delete(f"amb:dlq:{topic}:workers")


async def test_a_garbled_entry_is_skipped_and_acknowledged(
    make_bus: BusFactory, topic: str, admin: redis.Redis, log_waiter: Callable[[str], LogWaiter]
) -> None:
    bus = await make_bus()
    skipped = log_waiter("not an AMB envelope")
    got = Received()
    await bus.subscribe(topic, got, group="workers")
    await bus.adapter.publish_raw(topic, b"\x00garbage")
    await bus.publish(topic, {"after": True})
    await got.wait_for(1)
    assert topic in (await skipped.wait()).getMessage()

    async def nothing_pending() -> bool:
        summary: Any = await admin.xpending(stream(topic), "workers")
        return bool(summary["pending"] == 0)

    await eventually(nothing_pending)


async def test_an_entry_abandoned_at_shutdown_goes_to_another_member(
    make_bus: BusFactory, topic: str
) -> None:
    leaving_bus = await make_bus(drain_timeout=0.1)
    holding = anyio.Event()
    held: list[Message] = []

    async def never_finishes(message: Message) -> None:
        held.append(message)
        holding.set()
        await anyio.sleep_forever()

    await leaving_bus.subscribe(topic, never_finishes, group="workers")
    await leaving_bus.publish(topic, {"n": 0})
    with anyio.fail_after(WAIT):
        await holding.wait()
    staying_bus = await make_bus()
    got = Received()
    await staying_bus.subscribe(topic, got, group="workers")
    await leaving_bus.disconnect()  # cancels the handler: the entry was never acknowledged
    [message] = await got.wait_for(1)
    assert message.id == held[0].id


async def test_unfinished_work_waits_for_the_next_member(make_bus: BusFactory, topic: str) -> None:
    first = await make_bus(drain_timeout=0.1)
    holding = anyio.Event()

    async def stuck(message: Message) -> None:
        holding.set()
        await anyio.sleep_forever()

    await first.subscribe(topic, stuck, group="workers")
    for n in range(5):
        await first.publish(topic, {"n": n}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        await holding.wait()
    await first.disconnect()  # one handler in flight, one prefetched entry, three never read
    later = await make_bus()
    got = Received()
    await later.subscribe(topic, got, group="workers")
    await got.wait_for(5)
    assert sorted(p["n"] for p in got.payloads) == list(range(5))


async def test_a_dead_consumers_entries_are_taken_over(
    make_bus: BusFactory, topic: str, admin: redis.Redis
) -> None:
    # A consumer that read an entry and died without a word, as a crashed process would.
    await admin.xgroup_create(stream(topic), "workers", id="$", mkstream=True)
    await admin.zadd("amb:groups", {topic: int(time.time())})
    message = Message(id="orphan-1", topic=topic, payload={"n": 1})
    await admin.xadd(stream(topic), {"message": encode(message)})
    await admin.xreadgroup("workers", "crashed", {stream(topic): ">"}, count=1)
    bus = await make_bus(claim_idle=0.3)
    got = Received()
    await bus.subscribe(topic, got, group="workers")
    [taken_over] = await got.wait_for(1)
    assert taken_over.id == "orphan-1"
    # The crashed consumer keeps the group alive (until group_retention): clean up after it.
    await admin.zrem("amb:groups", topic)
    await admin.delete(stream(topic), f"amb:idle:{topic}")


async def test_the_last_member_leaving_removes_the_group(
    make_bus: BusFactory, topic: str, admin: redis.Redis
) -> None:
    bus = await make_bus()
    got = Received()
    first = await bus.subscribe(topic, got, group="workers")
    second = await bus.subscribe(topic, got, group="workers")
    await bus.publish(topic, {"n": 1})
    await got.wait_for(1)
    assert await admin.zscore("amb:groups", topic) is not None
    await bus.unsubscribe(first)
    await bus.unsubscribe(second)

    async def gone() -> bool:
        return not await admin.exists(stream(topic)) and await admin.zscore("amb:groups", topic) is None

    await eventually(gone)
    # A publish now reaches nobody, and a new member starts afresh.
    await bus.publish(topic, {"n": 2}, wait_for_confirmation=True)
    await bus.subscribe(topic, got, group="workers")
    await bus.publish(topic, {"n": 3})
    await got.wait_for(2)
    assert [p["n"] for p in got.payloads] == [1, 3]


async def test_groups_nobody_vouches_for_are_forgotten(
    make_bus: BusFactory, topic: str, admin: redis.Redis
) -> None:
    ghost = f"{topic}.ghost"
    await admin.xadd(stream(ghost), {"message": b"x"})
    await admin.zadd("amb:groups", {ghost: 1})  # last vouched for in 1970
    bus = await make_bus(group_retention=60, claim_idle=0.2)
    await bus.subscribe(topic, Received(), group="workers")

    async def forgotten() -> bool:
        return await admin.zscore("amb:groups", ghost) is None and not await admin.exists(stream(ghost))

    await eventually(forgotten)
    assert await admin.zscore("amb:groups", topic) is not None
