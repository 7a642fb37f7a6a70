"""What the adapter puts on the broker: properties, exchanges, queues, native priority and TTL."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from amb_core import MessagePriority
from amb_core.adapter import CONTENT_TYPE, decode
from amb_core.testing import BusFactory, Recorder
from conftest import WAIT, Admin

pytestmark = pytest.mark.anyio


async def test_properties_carry_priority_expiry_and_id(
    amb_make_bus: BusFactory, admin: Admin, prefix: str, amb_topic: str
) -> None:
    bus = await amb_make_bus()
    channel = await admin.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(prefix, amb_topic)
    message_id = await bus.publish(amb_topic, {"n": 1}, priority=MessagePriority.HIGH, ttl=60)
    with anyio.fail_after(WAIT):
        async with queue.iterator() as messages:
            async for incoming in messages:
                await incoming.ack()
                break
    assert incoming.priority == int(MessagePriority.HIGH)
    assert incoming.expiration == 60.0  # aio-pika reports milliseconds as seconds
    assert incoming.message_id == message_id
    assert incoming.content_type == CONTENT_TYPE
    assert incoming.delivery_mode == 2
    assert incoming.routing_key == amb_topic
    decoded = decode(incoming.body)
    assert (decoded.id, decoded.payload, decoded.ttl) == (message_id, {"n": 1}, 60)


async def test_transient_publishing_is_an_option(
    amb_make_bus: BusFactory, admin: Admin, prefix: str, amb_topic: str
) -> None:
    bus = await amb_make_bus(persistent=False)
    channel = await admin.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(prefix, amb_topic)
    await bus.publish(amb_topic, {"n": 1}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        async with queue.iterator() as messages:
            incoming = await anext(aiter(messages))
            await incoming.ack()
    assert incoming.delivery_mode == 1
    assert incoming.expiration is None


async def test_reply_topics_never_reach_wildcard_bindings(
    amb_make_bus: BusFactory, admin: Admin, prefix: str, amb_topic: str
) -> None:
    bus = await amb_make_bus()
    channel = await admin.channel()
    everything = await channel.declare_queue(exclusive=True)
    await everything.bind(prefix, "#")
    replies = await channel.declare_queue(exclusive=True)
    await replies.bind(f"{prefix}.reserved", "_amb.inbox.*")
    await bus.publish("_amb.inbox.someone", {"n": 1}, wait_for_confirmation=True)
    await bus.publish(amb_topic, {"n": 2}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        async with everything.iterator() as messages:
            first = await anext(aiter(messages))  # the ordinary one: the reply went elsewhere
    assert first.routing_key == amb_topic
    assert await admin.ready(replies.name) == 1


async def test_queues_of_groups_outlive_their_members_and_others_do_not(
    amb_make_bus: BusFactory, admin: Admin, prefix: str, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await amb_make_bus()
    group_queue = admin.group_queue("workers", f"{amb_topic}.*")
    grouped = await bus.subscribe(f"{amb_topic}.*", amb_received(), group="workers")
    ungrouped = await bus.subscribe(f"{amb_topic}.*", amb_received())
    ungrouped_queue = f"{prefix}.sub.{ungrouped}"
    assert await admin.ready(group_queue) == 0
    assert await admin.exclusive_exists(ungrouped_queue)
    await bus.unsubscribe(grouped)
    await bus.unsubscribe(ungrouped)
    await bus.publish(f"{amb_topic}.a", {"n": 1}, wait_for_confirmation=True)
    assert await admin.ready(group_queue) == 1  # kept for the group's next member
    assert not await admin.exclusive_exists(ungrouped_queue)
    assert await admin.ready(f"{prefix}.dlq") == 0


async def test_the_broker_itself_orders_by_priority(
    amb_make_bus: BusFactory, admin: Admin, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    # prefetch=1: the broker holds all but one message, so the order is the broker's.
    bus = await amb_make_bus(prefetch=1)
    admin.group_queue("workers", amb_topic)
    first = await bus.subscribe(amb_topic, amb_received(), group="workers")
    await bus.unsubscribe(first)
    order = [MessagePriority.LOW, MessagePriority.NORMAL, MessagePriority.URGENT, MessagePriority.HIGH]
    for priority in order:
        await bus.publish(amb_topic, {"p": priority.name}, priority=priority, wait_for_confirmation=True)
    got = amb_received()
    await bus.subscribe(amb_topic, got, group="workers")
    await got.wait_for(4)
    assert [p["p"] for p in got.payloads] == ["URGENT", "HIGH", "NORMAL", "LOW"]


async def test_the_broker_itself_drops_expired_messages(
    amb_make_bus: BusFactory, admin: Admin, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await amb_make_bus()
    queue = admin.group_queue("workers", amb_topic)
    await bus.unsubscribe(await bus.subscribe(amb_topic, amb_received(), group="workers"))
    await bus.publish(amb_topic, {"n": "expires"}, ttl=0.05, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        # RabbitMQ drops it with no consumer involved; polling: the broker sends no event.
        while await admin.ready(queue):  # noqa: ASYNC110
            await anyio.sleep(0.05)
