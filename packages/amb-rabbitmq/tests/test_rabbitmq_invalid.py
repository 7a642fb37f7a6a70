"""Messages that are not valid envelopes (issue 11, problem 2): logged, then settled beside the
queue so they never block it: dead-lettered with their reason on a group, acknowledged on an
ungrouped subscription. More of them than the prefetch window used to wedge a subscription."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import pytest

from amb_core import MessageBus
from amb_core.testing import BusFactory, Recorder
from conftest import WAIT, Admin

pytestmark = pytest.mark.anyio

#: Its timestamp overflows when made UTC: `wire.decode` used to raise OverflowError on it.
HOSTILE = b'{"amb":1,"id":"hostile","topic":"x","payload":{},"timestamp":"9999-12-31T23:59:59-23:59"}'
#: More than the default prefetch of a concurrency-1 subscription (256).
COUNT = 300


async def _dead_letters(
    admin: Admin, prefix: str, count: int
) -> list[tuple[bytes, str | None, dict[str, object]]]:
    """The first ``count`` dead letters of this test's prefix (body, routing key, headers); the
    broker keeps them where no event can be awaited, so this polls."""
    with anyio.fail_after(WAIT):
        while (await admin.ready(f"{prefix}.dlq") or 0) < count:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    channel = await admin.channel()
    queue = await channel.declare_queue(f"{prefix}.dlq", passive=True)
    letters: list[tuple[bytes, str | None, dict[str, object]]] = []
    for _ in range(count):
        message = await queue.get(no_ack=True)
        assert message is not None
        letters.append((message.body, message.routing_key, dict(message.headers or {})))
    await channel.close()
    return letters


async def test_more_invalid_messages_than_the_prefetch_never_wedge_a_group(
    amb_make_bus: BusFactory, admin: Admin, prefix: str, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await amb_make_bus()
    queue = admin.group_queue("workers", amb_topic)
    got = amb_received()
    await bus.subscribe(amb_topic, got, group="workers")
    for _ in range(COUNT):
        await bus.adapter.publish_raw(amb_topic, HOSTILE)
    await bus.publish(amb_topic, {"good": True}, wait_for_confirmation=True)
    assert (await got.wait_for(1))[0].payload == {"good": True}
    letters = await _dead_letters(admin, prefix, COUNT)
    for body, routing_key, headers in letters:
        assert body == HOSTILE  # exactly as received
        assert routing_key == amb_topic
        assert headers["x-amb-queue"] == queue
        assert headers["x-amb-attempt"] == 1
        assert "OverflowError" in str(headers["x-amb-reason"])
    await bus.disconnect()  # anything left unacknowledged would be ready again now
    assert await admin.ready(queue) == 0


async def test_more_invalid_messages_than_the_prefetch_never_wedge_an_ungrouped_subscription(
    amb_make_bus: BusFactory,
    admin: Admin,
    prefix: str,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = await amb_make_bus()
    got = amb_received()
    await bus.subscribe(amb_topic, got)
    for _ in range(COUNT):
        await bus.adapter.publish_raw(amb_topic, HOSTILE)
    await bus.publish(amb_topic, {"good": True}, wait_for_confirmation=True)
    assert (await got.wait_for(1))[0].payload == {"good": True}
    # Acknowledged, not dead-lettered; logged (a few lines, not one per message).
    warnings = [r for r in caplog.records if "not a valid AMB envelope" in r.getMessage()]
    assert any(r.levelno == logging.WARNING and amb_topic in r.getMessage() for r in warnings)
    assert sum(r.levelno >= logging.WARNING for r in warnings) <= 6
    assert await admin.ready(f"{prefix}.dlq") == 0


async def test_an_invalid_message_between_good_ones_delays_none(
    amb_make_bus: BusFactory, admin: Admin, prefix: str, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    # Two subscriptions of one bus share the decoding of each body (amb_rabbitmq._decoding): the
    # invalid one must be settled by each of them.
    publisher: MessageBus = await amb_make_bus()
    subscriber = await amb_make_bus()
    admin.group_queue("workers", amb_topic)
    grouped, ungrouped = amb_received(), amb_received()
    await subscriber.subscribe(amb_topic, grouped, group="workers")
    await subscriber.subscribe(amb_topic, ungrouped)
    await publisher.publish(amb_topic, {"n": 0})
    await publisher.adapter.publish_raw(amb_topic, HOSTILE)
    await publisher.publish(amb_topic, {"n": 1}, wait_for_confirmation=True)
    for record in (grouped, ungrouped):
        assert [p["n"] for p in (m.payload for m in await record.wait_for(2))] == [0, 1]
    [(body, _, headers)] = await _dead_letters(admin, prefix, 1)
    assert body == HOSTILE and "OverflowError" in str(headers["x-amb-reason"])
