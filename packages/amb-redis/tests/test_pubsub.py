"""Ungrouped subscriptions on Redis Pub/Sub, publishing through the routing script, and how
AMB's names look to plain Redis clients."""

from __future__ import annotations

import logging
import random

import anyio
import pytest
import redis.asyncio as redis
from test_units import random_pattern, random_topic

from amb_core import BrokerUnavailableError, MessageBus, MessageTooLargeError
from amb_core.adapter import decode, topic_matches
from amb_core.testing import BusFactory, Recorder
from amb_redis import DEFAULT_MAX_MESSAGE_SIZE, RedisBroker
from amb_redis._scripts import Scripts
from conftest import WAIT

pytestmark = pytest.mark.anyio


async def test_the_scripts_route_by_the_same_rules_as_the_bus(admin: redis.Redis) -> None:
    scripts = Scripts("amb:", maxlen=1, dead_letter_maxlen=1, max_routes=10)
    source = scripts.build("return matches(ARGV[1], ARGV[2]) and 1 or 0").source.decode()
    rng = random.Random(11)
    pairs = [(random_pattern(rng), random_topic(rng)) for _ in range(400)]
    async with admin.pipeline(transaction=False) as pipe:
        for pattern, topic in pairs:
            pipe.eval(source, 0, pattern, topic)
        results = await pipe.execute()
    for (pattern, topic), result in zip(pairs, results, strict=True):
        assert bool(result) == topic_matches(pattern, topic), (pattern, topic)


async def test_the_entry_point_serves_both_schemes() -> None:
    assert isinstance(MessageBus.from_url("redis://127.0.0.1:6379/0").adapter, RedisBroker)
    assert isinstance(MessageBus.from_url("rediss://127.0.0.1:6379/0").adapter, RedisBroker)


async def test_an_unreachable_server_is_a_connection_error() -> None:
    bus = MessageBus.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(BrokerUnavailableError) as raised:
        await bus.connect()
    assert isinstance(raised.value, ConnectionError)


async def test_topics_are_plain_channels_both_ways(
    bus_and_topic: tuple[MessageBus, str], admin: redis.Redis
) -> None:
    bus, topic = bus_and_topic
    got = Recorder(timeout=WAIT)
    await bus.subscribe(topic, got)
    listener = admin.pubsub()
    await listener.subscribe(topic)
    await listener.get_message(timeout=WAIT)  # the confirmation
    message_id = await bus.publish(topic, {"from": "amb"}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        while (raw := await listener.get_message(timeout=WAIT)) is None:
            pass
    assert decode(raw["data"]).id == message_id
    await listener.aclose()  # type: ignore[no-untyped-call]
    # A plain client publishing an envelope reaches AMB subscribers.
    await admin.publish(topic, raw["data"])
    await got.wait_for(2)
    assert got.messages[1].id == message_id


async def test_a_foreign_message_on_a_pattern_is_skipped_with_a_warning(
    bus_and_topic: tuple[MessageBus, str], admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    bus, topic = bus_and_topic
    got = Recorder(timeout=WAIT)
    await bus.subscribe(f"{topic}.#", got)
    await admin.publish(f"{topic}.x", b"plain text")
    await bus.publish(f"{topic}.y", {"after": True})
    await got.wait_for(1)
    assert got.payloads == [{"after": True}]
    assert any(r.levelno == logging.WARNING and f"{topic}.x" in r.getMessage() for r in caplog.records)


async def test_a_glob_wider_than_the_pattern_is_filtered_exactly(
    bus_and_topic: tuple[MessageBus, str],
) -> None:
    bus, topic = bus_and_topic
    one, hashed = Recorder(timeout=WAIT), Recorder(timeout=WAIT)
    await bus.subscribe(f"{topic}.*", one)  # the Redis glob "<topic>.*" also matches "<topic>.a.b"
    await bus.subscribe(f"{topic}.#.b", hashed)  # and "<topic>*.b" would match "<topic>x.b"
    for suffix in ("a.b", "a", "b"):
        await bus.publish(f"{topic}.{suffix}", {"to": suffix})
    await bus.publish(f"{topic}x.b", {"to": "x.b"})
    await bus.publish(f"{topic}.end", {"to": "end"})
    await bus.publish(f"{topic}.end.b", {"to": "end.b"})
    await one.wait_for(3)
    await hashed.wait_for(3)
    assert [p["to"] for p in one.payloads] == ["a", "b", "end"]
    assert [p["to"] for p in hashed.payloads] == ["a.b", "b", "end.b"]


async def test_fire_and_forget_publishers_wait_for_room_and_lose_nothing(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    publisher = await amb_make_bus(max_pending=8)
    subscriber = await amb_make_bus()
    got = Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, got)

    async def burst(first: int) -> None:
        for n in range(first, first + 500):
            await publisher.publish(amb_topic, {"n": n})

    async with anyio.create_task_group() as tasks:
        for first in range(0, 2000, 500):
            tasks.start_soon(burst, first)
    await got.wait_for(2000)
    numbers = [p["n"] for p in got.payloads]
    assert sorted(numbers) == list(range(2000))
    for first in range(0, 2000, 500):  # each publisher's messages stay in order
        mine = [n for n in numbers if first <= n < first + 500]
        assert mine == sorted(mine)


async def test_disconnect_delivers_what_was_published_without_confirmation(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    subscriber = await amb_make_bus()
    got = Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, got)
    publisher = await amb_make_bus()
    for n in range(300):
        await publisher.publish(amb_topic, {"n": n})
    await publisher.disconnect()
    await got.wait_for(300)


@pytest.fixture
async def bus_and_topic(amb_make_bus: BusFactory, amb_topic: str) -> tuple[MessageBus, str]:
    return await amb_make_bus(), amb_topic


async def test_a_message_over_max_message_size_is_refused_before_sending(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    bus = await amb_make_bus()
    assert bus.adapter.max_message_size == DEFAULT_MAX_MESSAGE_SIZE == 8 * 1024 * 1024
    got = Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, got)
    await bus.subscribe(amb_topic, got, group="workers")
    for confirm in (False, True):
        with pytest.raises(MessageTooLargeError) as raised:
            await bus.publish(amb_topic, {"s": "x" * DEFAULT_MAX_MESSAGE_SIZE}, wait_for_confirmation=confirm)
        assert str(DEFAULT_MAX_MESSAGE_SIZE) in str(raised.value)
    await bus.publish(amb_topic, {"after": True}, wait_for_confirmation=True)
    await got.wait_for(2)
    assert got.payloads == [{"after": True}, {"after": True}]


async def test_a_large_message_within_max_message_size_arrives_whole(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    size = 20_000_000
    bus = await amb_make_bus(max_message_size=size + 1000)
    plain, grouped = Recorder(timeout=WAIT), Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, plain)
    await bus.subscribe(amb_topic, grouped, group="workers")
    blob = "y" * size
    await bus.publish(amb_topic, {"blob": blob}, wait_for_confirmation=True)
    await bus.publish(amb_topic, {"after": True}, wait_for_confirmation=True)
    await plain.wait_for(2)
    await grouped.wait_for(2)
    assert plain.payloads[0]["blob"] == blob and grouped.payloads[0]["blob"] == blob
