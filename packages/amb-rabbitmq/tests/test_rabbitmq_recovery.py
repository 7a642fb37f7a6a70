"""RabbitMQ restarts under running buses (the ``amb_broker`` fixture: ``scripts/services.py restart
rabbitmq``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable

import anyio
import pytest

from amb_core import Message
from amb_core.testing import BrokerProcess, BusFactory, Recorder, publish_until_delivered
from conftest import WAIT, Admin

pytestmark = [pytest.mark.anyio, pytest.mark.fault]


async def test_publishing_through_a_restart(
    amb_make_bus: BusFactory,
    admin: Admin,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    amb_broker: BrokerProcess,
) -> None:
    publisher, subscriber = await amb_make_bus(), await amb_make_bus()
    admin.group_queue("workers", amb_topic)
    everyone, workers = amb_received(), amb_received()
    await subscriber.subscribe(amb_topic, everyone)
    await subscriber.subscribe(amb_topic, workers, group="workers")

    async def answer(request: Message) -> None:
        await subscriber.reply(request, {"ok": True})

    await subscriber.subscribe(f"{amb_topic}.ask", answer)
    assert (await publisher.request(f"{amb_topic}.ask", {}, timeout=WAIT)).payload == {"ok": True}

    outcomes: Counter[str] = Counter()
    confirmed: list[int] = []
    stop = anyio.Event()

    async def keep_publishing(confirm: bool) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                await publisher.publish(
                    amb_topic, {"n": n, "confirmed": confirm}, wait_for_confirmation=confirm
                )
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
        await amb_broker.restart()
        await publish_until_delivered(publisher, amb_topic, everyone, workers, within=WAIT * 3)
        stop.set()
    assert outcomes["sent"] > 0
    # Behind everything published so far in the group's queue: once it is handled, so is the rest.
    await publisher.publish(amb_topic, {"n": 0, "sentinel": True}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        while not any(m.payload.get("sentinel") for m in workers.messages):
            await workers.wait_for(len(workers.messages) + 1)

    # Every confirmed message reached the group's durable queue, even those published while
    # the subscriber's bus was still reconnecting (persistent messages survive the restart).
    handled = {m.payload["n"] for m in workers.messages if m.payload.get("confirmed") is True}
    assert set(confirmed) <= handled

    seen, group_seen = len(everyone.messages), len(workers.messages)
    for n in range(20):
        await publisher.publish(amb_topic, {"after": n}, wait_for_confirmation=n == 19)
    await everyone.wait_for(seen + 20)
    with anyio.fail_after(WAIT):
        while sum("after" in m.payload for m in everyone.messages) < 20:
            await everyone.wait_for(len(everyone.messages) + 1)
    await workers.wait_for(group_seen + 20)
    # (the sentinel may reach the ungrouped subscription after `seen` was counted)
    assert [m.payload["after"] for m in everyone.messages[seen:] if "after" in m.payload] == list(range(20))
    assert (await publisher.request(f"{amb_topic}.ask", {}, timeout=WAIT)).payload == {"ok": True}


async def test_a_groups_waiting_messages_survive_a_restart(
    amb_make_bus: BusFactory,
    admin: Admin,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    amb_broker: BrokerProcess,
) -> None:
    bus = await amb_make_bus()
    admin.group_queue("workers", amb_topic)
    await bus.unsubscribe(await bus.subscribe(amb_topic, amb_received(), group="workers"))
    for n in range(5):
        await bus.publish(amb_topic, {"n": n}, wait_for_confirmation=True)
    await amb_broker.restart()
    workers = amb_received()
    with anyio.fail_after(WAIT * 3):
        while True:  # subscribe waits for the reconnect (or fails while the broker is still down)
            with contextlib.suppress(ConnectionError):
                await bus.subscribe(amb_topic, workers, group="workers")
                break
            await asyncio.sleep(0.1)
    await workers.wait_for(5)
    assert sorted(p["n"] for p in workers.payloads) == list(range(5))
