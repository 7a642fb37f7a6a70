"""Losing Redis: the adapter reconnects by itself, subscribes again, recreates lost groups and
reports what could not be delivered.

Most tests close only their own buses' connections (found by client name) and delete only their
own keys, which is what a restart without persistence looks like to them, without disturbing
anyone else on a shared Redis; the `fault` test restarts Redis for real.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis.asyncio as redis

from amb_core import Message, MessageBus
from conftest import WAIT, BusFactory, LogWaiter, Received, kill_connections

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[3]


async def _publish_until_delivered(publisher: MessageBus, topic: str, *subscriptions: Received) -> None:
    """Probe until a publish reaches every subscription: the moment the buses have recovered.
    Pub/Sub is at most once, so probes published while a subscriber was reconnecting are lost."""
    seen = [len(got.messages) for got in subscriptions]
    with anyio.fail_after(WAIT * 3):
        while True:
            with contextlib.suppress(ConnectionError):
                await publisher.publish(topic, {"probe": True}, wait_for_confirmation=True)
            with anyio.move_on_after(1):
                for got, count in zip(subscriptions, seen, strict=True):
                    await got.wait_for(count + 1)
                return


async def _check_everything_flows(
    publisher: MessageBus, topic: str, plain: Received, grouped: Received
) -> None:
    seen, group_seen = len(plain.messages), len(grouped.messages)
    for n in range(20):
        await publisher.publish(topic, {"after": n}, wait_for_confirmation=n % 2 == 0)
    await plain.wait_for(seen + 20)
    await grouped.wait_for(group_seen + 20)
    assert [p["after"] for p in plain.payloads[seen:]] == list(range(20))
    assert sorted(p["after"] for p in grouped.payloads[group_seen:]) == list(range(20))
    assert (await publisher.request(f"{topic}.ask", {}, timeout=WAIT)).payload == {"ok": True}


async def _subscribe_all(subscriber: MessageBus, topic: str) -> tuple[Received, Received]:
    plain, grouped = Received(), Received()
    await subscriber.subscribe(topic, plain)
    await subscriber.subscribe(topic, grouped, group="workers")

    async def answer(request: Message) -> None:
        await subscriber.reply(request, {"ok": True})

    await subscriber.subscribe(f"{topic}.ask", answer)
    return plain, grouped


async def test_the_adapter_recovers_when_redis_loses_its_data(
    make_bus: BusFactory, topic: str, admin: redis.Redis, log_waiter: Callable[[str], LogWaiter]
) -> None:
    name = f"amb-test-{uuid.uuid4().hex[:8]}"
    subscriber, publisher = await make_bus(client_name=name), await make_bus(client_name=name)
    plain, grouped = await _subscribe_all(subscriber, topic)
    await _check_everything_flows(publisher, topic, plain, grouped)
    lost = log_waiter("lost the connection")
    recreated = log_waiter("was gone")

    # What a restart without persistence does to these buses: their data and connections go.
    await admin.delete(f"amb:stream:{topic}", "amb:routes")
    await admin.zrem("amb:groups", topic)
    assert await kill_connections(admin, name) == 4

    await _publish_until_delivered(publisher, topic, plain, grouped)
    await _check_everything_flows(publisher, topic, plain, grouped)
    await lost.wait()
    assert "workers" in (await recreated.wait()).getMessage()


async def test_a_publish_during_an_outage_is_sent_once_the_connection_is_back(
    make_bus: BusFactory, topic: str, admin: redis.Redis
) -> None:
    name = f"amb-test-{uuid.uuid4().hex[:8]}"
    subscriber = await make_bus()
    publisher = await make_bus(client_name=name)
    grouped = Received()
    await subscriber.subscribe(topic, grouped, group="workers")
    await kill_connections(admin, name)
    for n in range(10):  # queued while the publisher reconnects, sent in order once it is back
        await publisher.publish(topic, {"n": n}, wait_for_confirmation=n == 9)
    await grouped.wait_for(10)
    assert sorted(p["n"] for p in grouped.payloads) == list(range(10))


@pytest.mark.fault
async def test_the_adapter_recovers_from_a_real_restart(make_bus: BusFactory, topic: str) -> None:
    subscriber, publisher = await make_bus(), await make_bus()
    plain, grouped = await _subscribe_all(subscriber, topic)
    await _check_everything_flows(publisher, topic, plain, grouped)
    command = [sys.executable, str(ROOT / "scripts" / "services.py"), "restart", "redis"]
    await anyio.to_thread.run_sync(lambda: subprocess.run(command, check=True, timeout=120))
    await _publish_until_delivered(publisher, topic, plain, grouped)
    await _check_everything_flows(publisher, topic, plain, grouped)
