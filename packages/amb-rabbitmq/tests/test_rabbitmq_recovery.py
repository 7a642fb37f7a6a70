"""RabbitMQ restarts under running buses (``scripts/services.py restart rabbitmq``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import pytest

from amb_core import Message, MessageBus
from conftest import WAIT, Admin, BusFactory, Received

pytestmark = [pytest.mark.anyio, pytest.mark.fault]


async def _until_delivered(publisher: MessageBus, topic: str, *records: Received) -> None:
    """Publish probes until one reaches every record: the subscriber's bus has recovered."""
    seen = [len(record.messages) for record in records]
    with anyio.fail_after(WAIT * 3):
        while True:
            with contextlib.suppress(ConnectionError):
                await publisher.publish(topic, {"probe": True}, wait_for_confirmation=True)
            with anyio.move_on_after(0.5):
                for record, count in zip(records, seen, strict=True):
                    await record.wait_for(count + 1)
                return


async def test_publishing_through_a_restart(
    make_bus: BusFactory,
    admin: Admin,
    topic: str,
    received: Callable[[], Received],
    broker_restart: Callable[[], Awaitable[None]],
) -> None:
    publisher, subscriber = await make_bus(), await make_bus()
    admin.group_queue("workers", topic)
    everyone, workers = received(), received()
    await subscriber.subscribe(topic, everyone)
    await subscriber.subscribe(topic, workers, group="workers")

    async def answer(request: Message) -> None:
        await subscriber.reply(request, {"ok": True})

    await subscriber.subscribe(f"{topic}.ask", answer)
    assert (await publisher.request(f"{topic}.ask", {}, timeout=WAIT)).payload == {"ok": True}

    outcomes: Counter[str] = Counter()
    confirmed: list[int] = []
    stop = anyio.Event()

    async def keep_publishing(confirm: bool) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                await publisher.publish(topic, {"n": n, "confirmed": confirm}, wait_for_confirmation=confirm)
            except ConnectionError:
                outcomes["ConnectionError"] += 1  # reported, not hidden: allowed
            else:
                outcomes["sent"] += 1
                if confirm:
                    confirmed.append(n)
            await asyncio.sleep(0.002)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(keep_publishing, True)
        tasks.start_soon(keep_publishing, False)
        await broker_restart()
        await _until_delivered(publisher, topic, everyone, workers)
        stop.set()
    assert outcomes["sent"] > 0
    # Behind everything published so far in the group's queue: once it is handled, so is the rest.
    await publisher.publish(topic, {"n": 0, "sentinel": True}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        while not any(m.payload.get("sentinel") for m in workers.messages):
            await workers.wait_for(len(workers.messages) + 1)

    # Every confirmed message reached the group's durable queue, even those published while
    # the subscriber's bus was still reconnecting (persistent messages survive the restart).
    handled = {m.payload["n"] for m in workers.messages if m.payload.get("confirmed") is True}
    assert set(confirmed) <= handled

    seen, group_seen = len(everyone.messages), len(workers.messages)
    for n in range(20):
        await publisher.publish(topic, {"after": n}, wait_for_confirmation=n == 19)
    await everyone.wait_for(seen + 20)
    with anyio.fail_after(WAIT):
        while sum("after" in m.payload for m in everyone.messages) < 20:
            await everyone.wait_for(len(everyone.messages) + 1)
    await workers.wait_for(group_seen + 20)
    # (the sentinel may reach the ungrouped subscription after `seen` was counted)
    assert [m.payload["after"] for m in everyone.messages[seen:] if "after" in m.payload] == list(range(20))
    assert (await publisher.request(f"{topic}.ask", {}, timeout=WAIT)).payload == {"ok": True}


async def test_a_groups_waiting_messages_survive_a_restart(
    make_bus: BusFactory,
    admin: Admin,
    topic: str,
    received: Callable[[], Received],
    broker_restart: Callable[[], Awaitable[None]],
) -> None:
    bus = await make_bus()
    admin.group_queue("workers", topic)
    await bus.unsubscribe(await bus.subscribe(topic, received(), group="workers"))
    for n in range(5):
        await bus.publish(topic, {"n": n}, wait_for_confirmation=True)
    await broker_restart()
    workers = received()
    with anyio.fail_after(WAIT * 3):
        while True:  # subscribe waits for the reconnect (or fails while the broker is still down)
            with contextlib.suppress(ConnectionError):
                await bus.subscribe(topic, workers, group="workers")
                break
            await asyncio.sleep(0.1)
    await workers.wait_for(5)
    assert sorted(p["n"] for p in workers.payloads) == list(range(5))
