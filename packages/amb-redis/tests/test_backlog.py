"""Group streams are trimmed only of what every group acknowledged; when a backlog reaches
``stream_maxlen``, publishers wait for the consumers (issue 11, problem 6: a backlog longer than
``stream_maxlen`` used to be trimmed without a word, 49,980 of 150,000 confirmed messages gone)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis.asyncio as redis

from amb_core import BrokerUnavailableError, Message
from amb_core.testing import BusFactory, Recorder, eventually
from conftest import WAIT, LogWaiter

pytestmark = pytest.mark.anyio


def stream(topic: str) -> str:
    return f"amb:stream:{topic}"


async def test_a_backlog_past_stream_maxlen_loses_nothing(
    amb_make_bus: BusFactory, amb_topic: str, log_waiter: Callable[[str], LogWaiter]
) -> None:
    maxlen, count = 20, 300
    full = log_waiter("not yet acknowledged (stream_maxlen)")
    consumer_bus = await amb_make_bus(stream_maxlen=maxlen)
    publisher = await amb_make_bus(stream_maxlen=maxlen)
    go_on, done = anyio.Event(), anyio.Event()
    got = Recorder(timeout=WAIT)

    async def slow(message: Message) -> None:
        await go_on.wait()
        await got(message)

    await consumer_bus.subscribe(amb_topic, slow, group="workers")

    async def publish_all() -> None:
        for n in range(count):
            await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=n % 3 == 0)
        done.set()

    async def first_of(*events: anyio.Event) -> None:
        async with anyio.create_task_group() as watchers:

            async def watch(event: anyio.Event) -> None:
                await event.wait()
                watchers.cancel_scope.cancel()

            for event in events:
                watchers.start_soon(watch, event)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(publish_all)
        # The consumer holds everything until the publisher has to wait for it (or, as it used
        # to, published all of it while the stream was trimmed under the consumer's feet).
        with anyio.fail_after(WAIT):
            await first_of(full.seen, done)
        go_on.set()
    await got.wait_for(count)
    assert sorted(p["n"] for p in got.payloads) == list(range(count))


async def test_publishers_wait_for_a_full_backlog_then_go_on(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis, log_waiter: Callable[[str], LogWaiter]
) -> None:
    maxlen = 10
    full = log_waiter("not yet acknowledged (stream_maxlen)")
    consumer_bus = await amb_make_bus()
    publisher = await amb_make_bus(stream_maxlen=maxlen)
    go_on = anyio.Event()
    got = Recorder(timeout=WAIT)

    async def stuck(message: Message) -> None:
        await go_on.wait()
        await got(message)

    await consumer_bus.subscribe(amb_topic, stuck, group="workers")
    done = anyio.Event()
    confirmed: list[int] = []

    async def publish_all() -> None:
        for n in range(3 * maxlen):
            await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=True)
            confirmed.append(n)
        done.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(publish_all)
        record = await full.wait()  # the publisher found the backlog at its cap, and says so
        assert stream(amb_topic) in record.getMessage() and record.levelno == logging.WARNING
        assert not done.is_set()
        assert await admin.xlen(stream(amb_topic)) <= maxlen + 1  # waiting, not piling up
        go_on.set()
    await got.wait_for(3 * maxlen)
    assert confirmed == list(range(3 * maxlen))
    assert sorted(p["n"] for p in got.payloads) == confirmed


async def test_a_backlog_that_never_drains_makes_publish_raise_after_outage_timeout(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    maxlen = 5
    consumer_bus = await amb_make_bus()
    publisher = await amb_make_bus(stream_maxlen=maxlen, outage_timeout=1.0)
    never = anyio.Event()

    async def stuck(message: Message) -> None:
        await never.wait()

    await consumer_bus.subscribe(amb_topic, stuck, group="workers")
    other = Recorder(timeout=WAIT)
    await consumer_bus.subscribe(f"{amb_topic}.other", other, group="workers")
    accepted = 0
    with anyio.fail_after(WAIT):
        with pytest.raises(BrokerUnavailableError) as raised:
            for n in range(100 * maxlen):
                # Fire and forget waits too, once an answer said the backlog is full (a burst
                # that never yields is all written before any answer is read).
                await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=n % 5 == 4)
                accepted += 1
    assert "stream_maxlen" in str(raised.value) and stream(amb_topic) in str(raised.value)
    assert not isinstance(raised.value, TimeoutError)

    # Nothing the publisher took was dropped: every accepted message is in the stream.
    async def all_there() -> bool:
        return bool(await admin.xlen(stream(amb_topic)) == accepted)

    await eventually(all_there, within=WAIT, every=0.01)
    # Topics routed to other streams are not held up.
    await publisher.publish(f"{amb_topic}.other", {"fine": True}, wait_for_confirmation=True)
    await other.wait_for(1)
    never.set()
    # The group keeps what it never read for its next member: clean up after it.
    await consumer_bus.disconnect()
    await admin.delete(stream(amb_topic), f"amb:idle:{amb_topic}", "amb:routes")
    await admin.zrem("amb:groups", amb_topic)
    await admin.hdel("amb:deadlines", f"{amb_topic} workers")


async def test_acknowledged_entries_are_trimmed(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    maxlen, count = 20, 200
    bus = await amb_make_bus(stream_maxlen=maxlen)
    got = Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, got, group="workers")
    for n in range(count):
        await bus.publish(amb_topic, {"n": n}, wait_for_confirmation=n % 10 == 0)
    await got.wait_for(count)
    length = await admin.xlen(stream(amb_topic))
    assert length <= maxlen + 1, length


async def test_a_slow_group_keeps_what_it_has_not_read_while_a_fast_one_moves_on(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    maxlen, count = 30, 25
    bus = await amb_make_bus(stream_maxlen=maxlen)
    fast = Recorder(timeout=WAIT)
    go_on = anyio.Event()
    slow = Recorder(timeout=WAIT)

    async def slow_handler(message: Message) -> None:
        await go_on.wait()
        await slow(message)

    await bus.subscribe(amb_topic, fast, group="fast")
    await bus.subscribe(amb_topic, slow_handler, group="slow")
    for n in range(count):
        await bus.publish(amb_topic, {"n": n}, wait_for_confirmation=True)
    await fast.wait_for(count)
    # Trim now (what the adapter's tick does): the slow group still needs these.
    adapter: Any = bus.adapter
    await adapter._pipe.call(adapter._scripts.trim.call(b"0", amb_topic.encode()))
    go_on.set()
    await slow.wait_for(count)
    assert [p["n"] for p in slow.payloads] == list(range(count))
