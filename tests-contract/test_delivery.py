"""Round trip, readiness, fan-out, unsubscribe and patterns (ordering: test_keys.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from amb_core import MessageBus, MessagePriority
from conftest import BusFactory, Received

pytestmark = pytest.mark.anyio


async def test_every_field_round_trips(bus: MessageBus, topic: str, received: Callable[[], Received]) -> None:
    got = received()
    await bus.subscribe(topic, got)
    payload = {
        "text": "naïve café 🤖 — 日本語",
        "nested": {"list": [1, 2.5, None, True, {"deep": ["x"]}], "empty": {}},
        "big": "x" * (512 * 1024),
    }
    message_id = await bus.publish(
        topic,
        payload,
        priority=MessagePriority.HIGH,
        sender="agent-1",
        ttl=3600,
        metadata={"trace": "abc", "n": 1},
        correlation_id="corr-1",
        reply_to="agent.replies",
    )
    [message] = await got.wait_for(1)
    assert message.id == message_id
    assert message.topic == topic
    assert message.payload == payload
    assert message.priority is MessagePriority.HIGH
    assert message.sender == "agent-1"
    assert message.ttl == 3600
    assert message.metadata == {"trace": "abc", "n": 1}
    assert message.correlation_id == "corr-1"
    assert message.reply_to == "agent.replies"
    assert message.timestamp.utcoffset() == timedelta(0)


async def test_defaults_round_trip(bus: MessageBus, topic: str, received: Callable[[], Received]) -> None:
    got = received()
    await bus.subscribe(topic, got)
    await bus.publish(topic, {})
    [message] = await got.wait_for(1)
    assert message.payload == {}
    assert message.priority is MessagePriority.NORMAL
    assert (message.sender, message.correlation_id, message.reply_to, message.ttl) == (
        None,
        None,
        None,
        None,
    )
    assert message.metadata == {}


async def test_a_publish_right_after_subscribe_arrives(
    bus: MessageBus, topic: str, received: Callable[[], Received]
) -> None:
    for attempt in range(5):
        got = received()
        await bus.subscribe(f"{topic}.r{attempt}", got)
        await bus.publish(f"{topic}.r{attempt}", {"attempt": attempt})
        assert (await got.wait_for(1))[0].payload == {"attempt": attempt}


async def test_fan_out_reaches_every_subscription(
    make_bus: BusFactory, topic: str, received: Callable[[], Received]
) -> None:
    first, second = await make_bus(), await make_bus()
    subscribers = [received() for _ in range(3)]
    await first.subscribe(topic, subscribers[0])
    await first.subscribe(topic, subscribers[1])
    await second.subscribe(topic, subscribers[2])
    for n in range(5):
        await first.publish(topic, {"n": n})
    for got in subscribers:
        await got.wait_for(5)
        assert sorted(p["n"] for p in got.payloads) == list(range(5))


async def test_no_handler_call_after_unsubscribe(
    bus: MessageBus, topic: str, received: Callable[[], Received]
) -> None:
    leaving, staying = received(), received()
    subscription_id = await bus.subscribe(topic, leaving)
    await bus.subscribe(topic, staying)
    await bus.publish(topic, {"n": 1})
    await leaving.wait_for(1)
    await bus.unsubscribe(subscription_id)
    await bus.unsubscribe(subscription_id)  # a second time does nothing
    await bus.publish(topic, {"n": 2})
    await staying.wait_for(2)
    assert leaving.payloads == [{"n": 1}]


async def test_wildcards_follow_amqp_rules(
    bus: MessageBus, topic: str, received: Callable[[], Received]
) -> None:
    star, star_x, hash_all, hash_x = received(), received(), received(), received()
    await bus.subscribe(f"{topic}.*", star)
    await bus.subscribe(f"{topic}.*.x", star_x)
    await bus.subscribe(f"{topic}.#", hash_all)
    await bus.subscribe(f"{topic}.#.x", hash_x)
    for suffix in ("a", "x", "a.x", "a.b.x", "a.b"):
        await bus.publish(f"{topic}.{suffix}", {"to": suffix})
    await bus.publish(topic, {"to": ""})
    # Last, one message each pattern matches: once it is in, everything before it is too.
    await bus.publish(f"{topic}.end.x", {"to": "end.x"})
    await bus.publish(f"{topic}.end", {"to": "end"})
    await star.wait_for(3)
    await star_x.wait_for(2)
    await hash_all.wait_for(8)
    await hash_x.wait_for(4)
    assert sorted(p["to"] for p in star.payloads) == ["a", "end", "x"]
    assert sorted(p["to"] for p in star_x.payloads) == ["a.x", "end.x"]
    assert sorted(p["to"] for p in hash_all.payloads) == [
        "",
        "a",
        "a.b",
        "a.b.x",
        "a.x",
        "end",
        "end.x",
        "x",
    ]
    assert sorted(p["to"] for p in hash_x.payloads) == ["a.b.x", "a.x", "end.x", "x"]
