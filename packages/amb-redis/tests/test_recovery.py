"""Losing Redis: the adapter reconnects by itself, subscribes again, recreates lost groups and
reports what could not be delivered.

Most tests close only their own buses' connections (found by client name) and delete only their
own keys, which is what a restart without persistence looks like to them, without disturbing
anyone else on a shared Redis; the `fault` test restarts Redis for real.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as redis

from amb_core import Message, MessageBus
from amb_core.adapter import encode
from amb_core.testing import FaultyProxy
from conftest import URL, WAIT, BusFactory, LogWaiter, Received, kill_connections

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
    round_id = uuid.uuid4().hex
    for n in range(20):
        await publisher.publish(topic, {"after": n, "round": round_id}, wait_for_confirmation=n % 2 == 0)

    def this_round(got: Received, start: int) -> list[int]:
        # Probes of the recovery may still come in to the group (at least once) meanwhile.
        return [p["after"] for p in got.payloads[start:] if p.get("round") == round_id]

    with anyio.fail_after(WAIT):
        while len(this_round(plain, seen)) < 20:
            await plain.wait_for(len(plain.messages) + 1)
        while set(this_round(grouped, group_seen)) != set(range(20)):
            await grouped.wait_for(len(grouped.messages) + 1)
    assert this_round(plain, seen) == list(range(20))
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


async def test_the_link_is_back_only_once_subscriptions_and_groups_are(
    proxy: FaultyProxy, make_bus: BusFactory, topic: str, admin: redis.Redis
) -> None:
    """Issue 11, problem 6: confirmed publishes made after a restart but before the group was
    registered again were lost. The bus sends nothing until the adapter says the link is back,
    and the adapter says so only once the groups and Pub/Sub subscriptions are in place."""
    subscriber = await make_bus(url=proxy.url(URL))
    plain, grouped = await _subscribe_all(subscriber, topic)
    link = subscriber.adapter.link
    assert link is not None
    refused = proxy.expect("refuse")
    proxy.mode = "refuse"
    proxy.cut()
    await refused.wait()
    # What a restart without persistence does: the group and its registration are gone.
    await admin.delete(f"amb:stream:{topic}", "amb:routes")
    await admin.zrem("amb:groups", topic)
    kept = [await subscriber.publish(topic, {"kept": n}) for n in range(5)]  # the bus keeps these
    proxy.mode = "forward"
    await link.wait_up(WAIT)
    groups: Any = await admin.xinfo_groups(f"amb:stream:{topic}")
    assert [group["name"] for group in groups] == [b"workers"]
    assert await admin.zscore("amb:groups", topic) is not None
    [(_, subscribers)] = await admin.pubsub_numsub(topic)
    assert subscribers >= 1
    publisher = await make_bus()  # not through the proxy
    await publisher.publish(topic, {"after": True}, wait_for_confirmation=True)
    await grouped.wait_for(6)
    assert [m.id for m in grouped.messages[:5]] == kept
    await plain.wait_for(6)


async def test_commands_in_flight_when_the_connection_goes_are_sent_again(
    proxy: FaultyProxy, make_bus: BusFactory, topic: str
) -> None:
    subscriber = await make_bus()
    grouped = Received()
    await subscriber.subscribe(topic, grouped, group="workers")
    publisher = await make_bus(url=proxy.url(URL))
    adapter: Any = publisher.adapter
    count = 300
    for n in range(count):
        await publisher.publish(topic, {"n": n})
    with anyio.fail_after(WAIT):
        while not adapter._pipe._inflight:
            await anyio.lowlevel.checkpoint()
    proxy.cut()  # the answers to what was written never come
    await publisher.publish(topic, {"n": count}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT * 2):
        while {p["n"] for p in grouped.payloads} != set(range(count + 1)):
            await grouped.wait_for(len(grouped.messages) + 1)


async def test_entries_of_a_read_whose_answer_was_lost_are_delivered_after_the_reconnect(
    proxy: FaultyProxy, make_bus: BusFactory, topic: str, admin: redis.Redis
) -> None:
    """A read that Redis ran but whose answer the lost connection took leaves entries pending
    for this consumer; they used to wait for a take-over after claim_idle (30 s), which a
    broker killed under a confirmed publisher showed as a lost message."""
    bus = await make_bus(url=proxy.url(URL), claim_idle=300)
    grouped = Received()
    await bus.subscribe(topic, grouped, group="workers")
    adapter: Any = bus.adapter
    [consumer] = adapter._consumers.values()
    with anyio.fail_after(WAIT):
        while consumer._task is not None:  # until its reader found nothing and stopped
            await anyio.lowlevel.checkpoint()
    # What the lost read did in Redis: an entry went to this consumer, which never heard of it.
    message = Message(id="lost-read-1", topic=topic, payload={"n": 1})
    await admin.xadd(f"amb:stream:{topic}", {"message": encode(message)})
    await admin.xreadgroup("workers", consumer.consumer, {f"amb:stream:{topic}": ">"}, count=1)
    link = bus.adapter.link
    assert link is not None
    proxy.cut()
    [got] = await grouped.wait_for(1)
    assert got.id == "lost-read-1"
    await link.wait_up(WAIT)


async def test_publishes_unconfirmed_when_the_adapter_closes_are_logged_with_their_ids(
    proxy: FaultyProxy, make_bus: BusFactory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = await make_bus(url=proxy.url(URL))
    adapter: Any = publisher.adapter
    ids = [await publisher.publish(topic, {"n": n}) for n in range(5)]
    with anyio.fail_after(WAIT):
        while not adapter._pipe._inflight:  # written, not yet answered
            await anyio.lowlevel.checkpoint()
    refused = proxy.expect("refuse")
    proxy.mode = "refuse"
    proxy.cut()
    await refused.wait()
    await publisher.disconnect()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR and "not confirmed" in r.getMessage()]
    assert all(message_id in record.getMessage() for message_id in ids)
