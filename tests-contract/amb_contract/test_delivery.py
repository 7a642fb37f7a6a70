"""Round trip, readiness, fan-out, unsubscribe and patterns (ordering: test_keys.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from amb_core import MessageBus, MessagePriority
from amb_core.testing import BusFactory, Recorder

pytestmark = pytest.mark.anyio


async def test_every_field_round_trips(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    got = amb_received()
    await amb_bus.subscribe(amb_topic, got)
    payload = {
        "text": "naïve café 🤖 — 日本語",
        "nested": {"list": [1, 2.5, None, True, {"deep": ["x"]}], "empty": {}},
        "big": "x" * (512 * 1024),
    }
    message_id = await amb_bus.publish(
        amb_topic,
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
    assert message.topic == amb_topic
    assert message.payload == payload
    assert message.priority is MessagePriority.HIGH
    assert message.sender == "agent-1"
    assert message.ttl == 3600
    assert message.metadata == {"trace": "abc", "n": 1}
    assert message.correlation_id == "corr-1"
    assert message.reply_to == "agent.replies"
    assert message.timestamp.utcoffset() == timedelta(0)


async def test_defaults_round_trip(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    got = amb_received()
    await amb_bus.subscribe(amb_topic, got)
    await amb_bus.publish(amb_topic, {})
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
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    for attempt in range(5):
        got = amb_received()
        await amb_bus.subscribe(f"{amb_topic}.r{attempt}", got)
        await amb_bus.publish(f"{amb_topic}.r{attempt}", {"attempt": attempt})
        assert (await got.wait_for(1))[0].payload == {"attempt": attempt}


async def test_fan_out_reaches_every_subscription(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    first, second = await amb_make_bus(), await amb_make_bus()
    subscribers = [amb_received() for _ in range(3)]
    await first.subscribe(amb_topic, subscribers[0])
    await first.subscribe(amb_topic, subscribers[1])
    await second.subscribe(amb_topic, subscribers[2])
    for n in range(5):
        await first.publish(amb_topic, {"n": n})
    for got in subscribers:
        await got.wait_for(5)
        assert sorted(p["n"] for p in got.payloads) == list(range(5))


async def test_no_handler_call_after_unsubscribe(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    leaving, staying = amb_received(), amb_received()
    subscription_id = await amb_bus.subscribe(amb_topic, leaving)
    await amb_bus.subscribe(amb_topic, staying)
    await amb_bus.publish(amb_topic, {"n": 1})
    await leaving.wait_for(1)
    await amb_bus.unsubscribe(subscription_id)
    await amb_bus.unsubscribe(subscription_id)  # a second time does nothing
    await amb_bus.publish(amb_topic, {"n": 2})
    await staying.wait_for(2)
    assert leaving.payloads == [{"n": 1}]


async def test_wildcards_follow_amqp_rules(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    star, star_x, hash_all, hash_x = amb_received(), amb_received(), amb_received(), amb_received()
    await amb_bus.subscribe(f"{amb_topic}.*", star)
    await amb_bus.subscribe(f"{amb_topic}.*.x", star_x)
    await amb_bus.subscribe(f"{amb_topic}.#", hash_all)
    await amb_bus.subscribe(f"{amb_topic}.#.x", hash_x)
    for suffix in ("a", "x", "a.x", "a.b.x", "a.b"):
        await amb_bus.publish(f"{amb_topic}.{suffix}", {"to": suffix})
    await amb_bus.publish(amb_topic, {"to": ""})
    # Last, one message each pattern matches: once it is in, everything before it is too.
    await amb_bus.publish(f"{amb_topic}.end.x", {"to": "end.x"})
    await amb_bus.publish(f"{amb_topic}.end", {"to": "end"})
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
