"""Groups over time on RabbitMQ: ``x-expires`` on a group's queue, queues declared before it
existed, and the registry that lets groups be listed (amb_rabbitmq._group_registry)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiormq.exceptions
import anyio
import pytest

from amb_core import GroupInfo
from amb_core.testing import BusFactory, Recorder
from amb_rabbitmq._properties import MAX_PRIORITY
from conftest import Admin

pytestmark = pytest.mark.anyio


async def test_a_groups_queue_expires_after_group_expiry(
    amb_make_bus: BusFactory, admin: Admin, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    # Issue 12: an abandoned group's durable queue kept collecting messages for good.
    bus = await amb_make_bus(group_expiry=1.5)
    subscription = await bus.subscribe(amb_topic, amb_received(), group="workers")
    queue = admin.group_queue("workers", amb_topic)
    await bus.unsubscribe(subscription)
    # The broker itself removes it 1.5 s after its last consumer left: no bus needs to run.
    await bus.disconnect()
    for _ in range(10):
        await anyio.sleep(3.0)  # each look renews the queue's lease: look less often than it lasts
        try:
            await (await admin.channel()).declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            break
    else:
        pytest.fail("the group's queue did not expire")


async def test_a_group_queue_declared_before_group_expiry_existed_is_used_with_a_warning(
    amb_make_bus: BusFactory,
    admin: Admin,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As an earlier AMB declared it: priorities, no x-expires. Redeclaring it with x-expires is
    # refused by RabbitMQ (PRECONDITION_FAILED): the member must still join, and say why the
    # group will not expire.
    channel = await admin.channel()
    await channel.declare_queue(
        admin.group_queue("workers", amb_topic), durable=True, arguments={"x-max-priority": MAX_PRIORITY}
    )
    bus = await amb_make_bus()
    got = amb_received()
    with caplog.at_level(logging.WARNING, logger="amb"):
        await bus.subscribe(amb_topic, got, group="workers")
    await bus.publish(amb_topic, {"n": 1})
    assert (await got.wait_for(1))[0].payload == {"n": 1}
    assert any(
        "x-expires" in record.getMessage() and "workers" in record.getMessage() for record in caplog.records
    )
    assert GroupInfo("workers", amb_topic, 1, 0) in await bus.list_groups()
