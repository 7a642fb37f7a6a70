"""Losing Redis: the adapter reconnects by itself, subscribes again, recreates lost groups and
reports what could not be delivered.

Most tests close only their own buses' connections (found by client name) and delete only their
own keys, which is what a restart without persistence looks like to them, without disturbing
anyone else on a shared Redis; the `fault` test restarts Redis for real.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as redis

from amb_core import Message, MessageBus
from amb_core.adapter import encode
from amb_core.testing import BrokerProcess, BusFactory, FaultyProxy, Recorder, publish_until_delivered
from conftest import URL, WAIT, LogWaiter, kill_connections

pytestmark = pytest.mark.anyio


async def _check_everything_flows(
    publisher: MessageBus, topic: str, plain: Recorder, grouped: Recorder
) -> None:
    seen, group_seen = len(plain.messages), len(grouped.messages)
    round_id = uuid.uuid4().hex
    for n in range(20):
        await publisher.publish(topic, {"after": n, "round": round_id}, wait_for_confirmation=n % 2 == 0)

    def this_round(got: Recorder, start: int) -> list[int]:
        # Probes of the recovery may still come in to the group (at least once) meanwhile.
        return [p["after"] for p in got.payloads[start:] if p.get("round") == round_id]

    with anyio.fail_after(WAIT):
        while len(this_round(plain, seen)) < 20:
            await plain.wait_for(len(plain.messages) + 1)
        while set(this_round(grouped, group_seen)) != set(range(20)):
            await grouped.wait_for(len(grouped.messages) + 1)
    assert this_round(plain, seen) == list(range(20))
    assert (await publisher.request(f"{topic}.ask", {}, timeout=WAIT)).payload == {"ok": True}


async def _subscribe_all(subscriber: MessageBus, topic: str) -> tuple[Recorder, Recorder]:
    plain, grouped = Recorder(timeout=WAIT), Recorder(timeout=WAIT)
    await subscriber.subscribe(topic, plain)
    await subscriber.subscribe(topic, grouped, group="workers")

    async def answer(request: Message) -> None:
        await subscriber.reply(request, {"ok": True})

    await subscriber.subscribe(f"{topic}.ask", answer)
    return plain, grouped


async def test_the_adapter_recovers_when_redis_loses_its_data(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis, log_waiter: Callable[[str], LogWaiter]
) -> None:
    name = f"amb-test-{uuid.uuid4().hex[:8]}"
    subscriber, publisher = await amb_make_bus(client_name=name), await amb_make_bus(client_name=name)
    plain, grouped = await _subscribe_all(subscriber, amb_topic)
    await _check_everything_flows(publisher, amb_topic, plain, grouped)
    lost = log_waiter("lost the connection")
    recreated = log_waiter("was gone")

    # What a restart without persistence does to these buses: their data and connections go.
    await admin.delete(f"amb:stream:{amb_topic}", "amb:routes")
    await admin.zrem("amb:groups", amb_topic)
    assert await kill_connections(admin, name) == 4

    await publish_until_delivered(publisher, amb_topic, plain, grouped, within=WAIT * 3)
    await _check_everything_flows(publisher, amb_topic, plain, grouped)
    await lost.wait()
    assert "workers" in (await recreated.wait()).getMessage()


async def test_a_publish_during_an_outage_is_sent_once_the_connection_is_back(
    amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    name = f"amb-test-{uuid.uuid4().hex[:8]}"
    subscriber = await amb_make_bus()
    publisher = await amb_make_bus(client_name=name)
    grouped = Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, grouped, group="workers")
    await kill_connections(admin, name)
    for n in range(10):  # queued while the publisher reconnects, sent in order once it is back
        await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=n == 9)
    await grouped.wait_for(10)
    assert sorted(p["n"] for p in grouped.payloads) == list(range(10))


@pytest.mark.fault
async def test_the_adapter_recovers_from_a_real_restart(
    amb_make_bus: BusFactory, amb_topic: str, amb_broker: BrokerProcess
) -> None:
    subscriber, publisher = await amb_make_bus(), await amb_make_bus()
    plain, grouped = await _subscribe_all(subscriber, amb_topic)
    await _check_everything_flows(publisher, amb_topic, plain, grouped)
    await amb_broker.restart()
    await publish_until_delivered(publisher, amb_topic, plain, grouped, within=WAIT * 3)
    await _check_everything_flows(publisher, amb_topic, plain, grouped)


async def test_the_link_is_back_only_once_subscriptions_and_groups_are(
    amb_proxy: FaultyProxy, amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    """Issue 11, problem 6: confirmed publishes made after a restart but before the group was
    registered again were lost. The bus sends nothing until the adapter says the link is back,
    and the adapter says so only once the groups and Pub/Sub subscriptions are in place."""
    subscriber = await amb_make_bus(url=amb_proxy.url(URL))
    plain, grouped = await _subscribe_all(subscriber, amb_topic)
    link = subscriber.adapter.link
    assert link is not None
    refused = amb_proxy.expect("refuse")
    amb_proxy.mode = "refuse"
    amb_proxy.cut()
    await refused.wait()
    # What a restart without persistence does: the group and its registration are gone.
    await admin.delete(f"amb:stream:{amb_topic}", "amb:routes")
    await admin.zrem("amb:groups", amb_topic)
    kept = [await subscriber.publish(amb_topic, {"kept": n}) for n in range(5)]  # the bus keeps these
    amb_proxy.mode = "forward"
    await link.wait_up(WAIT)
    groups: Any = await admin.xinfo_groups(f"amb:stream:{amb_topic}")
    assert [group["name"] for group in groups] == [b"workers"]
    assert await admin.zscore("amb:groups", amb_topic) is not None
    [(_, subscribers)] = await admin.pubsub_numsub(amb_topic)
    assert subscribers >= 1
    publisher = await amb_make_bus()  # not through the proxy
    await publisher.publish(amb_topic, {"after": True}, wait_for_confirmation=True)
    await grouped.wait_for(6)
    assert [m.id for m in grouped.messages[:5]] == kept
    await plain.wait_for(6)


async def test_commands_in_flight_when_the_connection_goes_are_sent_again(
    amb_proxy: FaultyProxy, amb_make_bus: BusFactory, amb_topic: str
) -> None:
    subscriber = await amb_make_bus()
    grouped = Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, grouped, group="workers")
    publisher = await amb_make_bus(url=amb_proxy.url(URL))
    adapter: Any = publisher.adapter
    count = 300
    for n in range(count):
        await publisher.publish(amb_topic, {"n": n})
    with anyio.fail_after(WAIT):
        while not adapter._pipe._inflight:
            await anyio.lowlevel.checkpoint()
    amb_proxy.cut()  # the answers to what was written never come
    await publisher.publish(amb_topic, {"n": count}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT * 2):
        while {p["n"] for p in grouped.payloads} != set(range(count + 1)):
            await grouped.wait_for(len(grouped.messages) + 1)


async def test_entries_of_a_read_whose_answer_was_lost_are_delivered_after_the_reconnect(
    amb_proxy: FaultyProxy, amb_make_bus: BusFactory, amb_topic: str, admin: redis.Redis
) -> None:
    """A read that Redis ran but whose answer the lost connection took leaves entries pending
    for this consumer; they used to wait for a take-over after claim_idle (30 s), which a
    broker killed under a confirmed publisher showed as a lost message."""
    bus = await amb_make_bus(url=amb_proxy.url(URL), claim_idle=300)
    grouped = Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, grouped, group="workers")
    adapter: Any = bus.adapter
    [consumer] = adapter._consumers.values()
    with anyio.fail_after(WAIT):
        while consumer._task is not None:  # until its reader found nothing and stopped
            await anyio.lowlevel.checkpoint()
    # What the lost read did in Redis: an entry went to this consumer, which never heard of it.
    message = Message(id="lost-read-1", topic=amb_topic, payload={"n": 1})
    await admin.xadd(f"amb:stream:{amb_topic}", {"message": encode(message)})
    await admin.xreadgroup("workers", consumer.consumer, {f"amb:stream:{amb_topic}": ">"}, count=1)
    link = bus.adapter.link
    assert link is not None
    amb_proxy.cut()
    [got] = await grouped.wait_for(1)
    assert got.id == "lost-read-1"
    await link.wait_up(WAIT)


async def test_publishes_unconfirmed_when_the_adapter_closes_are_logged_with_their_ids(
    amb_proxy: FaultyProxy, amb_make_bus: BusFactory, amb_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = await amb_make_bus(url=amb_proxy.url(URL))
    adapter: Any = publisher.adapter
    ids = [await publisher.publish(amb_topic, {"n": n}) for n in range(5)]
    with anyio.fail_after(WAIT):
        while not adapter._pipe._inflight:  # written, not yet answered
            await anyio.lowlevel.checkpoint()
    refused = amb_proxy.expect("refuse")
    amb_proxy.mode = "refuse"
    amb_proxy.cut()
    await refused.wait()
    await publisher.disconnect()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR and "not confirmed" in r.getMessage()]
    assert all(message_id in record.getMessage() for message_id in ids)
