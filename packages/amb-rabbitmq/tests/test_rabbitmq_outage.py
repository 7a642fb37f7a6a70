"""Outages (issue 11, problems 7 and 12), made with a proxy that the test cuts: the adapter reports
them on its `Link` and never waits itself; the bus keeps what is published meanwhile and sends
it, in order, once the link is restored, which is only once every subscription is back; and the
whole outage reads as two WARNING lines, none from the client libraries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from amb_core import BrokerUnavailableError, Link, Message, MessageBus
from amb_core.testing import BusFactory, FaultyProxy, Recorder
from amb_rabbitmq import RabbitMQBroker
from conftest import URL, WAIT, Admin

pytestmark = pytest.mark.anyio


@pytest.fixture
async def behind_proxy(
    amb_proxy: FaultyProxy, prefix: str, admin: Admin
) -> AsyncIterator[Callable[..., MessageBus]]:
    """Buses whose connection goes through ``proxy`` (connected by the test, closed at the end)."""
    buses: list[MessageBus] = []

    def make(**options: object) -> MessageBus:
        bus = MessageBus(RabbitMQBroker(amb_proxy.url(URL), exchange=prefix, **options))
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.disconnect()


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110 - the link has no event to await from outside
            await anyio.sleep(0.01)


def _link(bus: MessageBus) -> Link:
    link = bus.adapter.link
    assert link is not None
    return link


async def test_an_outage_is_ridden_out_by_the_bus_and_told_in_two_lines(
    amb_make_bus: BusFactory,
    behind_proxy: Callable[..., MessageBus],
    amb_proxy: FaultyProxy,
    admin: Admin,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscriber = await amb_make_bus()  # straight to the broker: it sees no outage
    admin.group_queue("workers", amb_topic)
    grouped, own, later = amb_received(), amb_received(), amb_received()
    await subscriber.subscribe(amb_topic, grouped, group="workers")
    bus = behind_proxy(outage_timeout=60)
    await bus.connect()
    await bus.subscribe(amb_topic, own)
    await bus.publish(amb_topic, {"n": -1}, wait_for_confirmation=True)
    await grouped.wait_for(1)
    await own.wait_for(1)
    link = _link(bus)
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="amb")  # to count the reconnect attempts

    await amb_proxy.stop()
    await _until(lambda: not link.up)
    with anyio.fail_after(5):  # at once: no waiting out the outage in the adapter
        with pytest.raises(BrokerUnavailableError):
            await bus.adapter.publish(
                Message(id="direct", topic=amb_topic, payload={"n": "direct"}), confirm=False
            )
        for n in range(50):  # kept by the bus, in order
            await bus.publish(amb_topic, {"n": n})
    subscribing = asyncio.ensure_future(bus.subscribe(f"{amb_topic}.later", later))
    confirming = asyncio.ensure_future(bus.publish(amb_topic, {"n": 50}, wait_for_confirmation=True))
    # Let the outage last several reconnect attempts: each used to log an ERROR of aiormq's.
    await _until(lambda: sum("still unreachable" in r.getMessage() for r in caplog.records) >= 6)
    assert not subscribing.done() and not confirming.done()

    await amb_proxy.start()
    await _until(lambda: link.up)
    # Restored means restored: the ungrouped queue (recreated) is there already.
    await bus.publish(amb_topic, {"n": 51}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        await subscribing
        await confirming
    for record in (grouped, own):
        await record.wait_for(1 + 52)
        kept = list(dict.fromkeys(m.payload["n"] for m in record.messages[1:]))
        assert kept == list(range(52)), kept
    await bus.publish(f"{amb_topic}.later", {"later": True})
    assert (await later.wait_for(1))[0].payload == {"later": True}

    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in loud] == ["amb.link", "amb.link"], [f"{r.name}: {r.getMessage()}" for r in loud]
    lost, back = (r.getMessage() for r in loud)
    assert lost.startswith("lost the connection to RabbitMQ at amqp://guest:***@127.0.0.1:")
    assert "is back after" in back


async def test_a_confirmed_publish_gives_up_after_outage_timeout_and_the_bus_recovers(
    behind_proxy: Callable[..., MessageBus],
    amb_proxy: FaultyProxy,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
) -> None:
    bus = behind_proxy(outage_timeout=1)
    await bus.connect()
    got = amb_received()
    await bus.subscribe(amb_topic, got)
    link = _link(bus)
    await amb_proxy.stop()
    await _until(lambda: not link.up)
    await bus.publish(amb_topic, {"n": 0})  # kept
    with anyio.fail_after(1 + 5):
        with pytest.raises(BrokerUnavailableError) as raised:
            await bus.publish(amb_topic, {"n": "never"}, wait_for_confirmation=True)
    assert "RabbitMQ at amqp://guest:***@" in str(raised.value)
    await amb_proxy.start()
    await _until(lambda: link.up)
    await bus.publish(amb_topic, {"n": 1}, wait_for_confirmation=True)
    assert [m.payload for m in await got.wait_for(2)] == [{"n": 0}, {"n": 1}]


async def test_cancelled_confirmed_publishes_spoil_nothing(
    amb_make_bus: BusFactory,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The bus cancels a confirmed publish after outage_timeout. Cancelled at every point (in
    # the fence behind fire-and-forget messages, in the publish, waiting for the confirm), it
    # must neither break the connection nor reorder or lose the fire-and-forget messages.
    bus = await amb_make_bus()
    got = amb_received()
    await bus.subscribe(amb_topic, got)
    for n in range(100):
        await bus.publish(amb_topic, {"n": n})
        confirming = asyncio.ensure_future(bus.publish(amb_topic, {"c": n}, wait_for_confirmation=True))
        for _ in range(n % 7):
            await asyncio.sleep(0)
        confirming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await confirming
    await bus.publish(amb_topic, {"last": True}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        while not any(m.payload.get("last") for m in got.messages):
            await got.wait_for(len(got.messages) + 1)
    assert [m.payload["n"] for m in got.messages if "n" in m.payload] == list(range(100))
    assert _link(bus).up
    assert not any("lost the connection" in r.getMessage() for r in caplog.records)


async def test_a_confirmed_message_sent_as_subscriptions_come_back_waits_for_their_queues(
    amb_make_bus: BusFactory,
    behind_proxy: Callable[..., MessageBus],
    amb_proxy: FaultyProxy,
    admin: Admin,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
) -> None:
    """A broker restart loses the exclusive queues, and can lose a group queue declared just
    before it; each comes back when its bus reconnects, on its own backoff. A bus that is back
    first must not have RabbitMQ drop its confirmed messages as unroutable meanwhile (the chaos
    suite lost 14 confirmed group messages that way): it sends them again for
    `RESUBSCRIBE_GRACE_S` until a queue takes them."""
    bus = behind_proxy(outage_timeout=60)
    await bus.connect()
    link = _link(bus)
    await amb_proxy.stop()
    await _until(lambda: not link.up)
    await amb_proxy.start()
    await _until(lambda: link.up)

    confirming = asyncio.ensure_future(bus.publish(amb_topic, {"n": 1}, wait_for_confirmation=True))
    await asyncio.sleep(0.5)  # a confirm (or an unroutable return) takes milliseconds
    assert not confirming.done(), "the message was dropped: no queue was bound yet"
    admin.group_queue("workers", amb_topic)
    got = amb_received()
    subscriber = await amb_make_bus()  # the member whose bus comes back later
    await subscriber.subscribe(amb_topic, got, group="workers")
    with anyio.fail_after(WAIT):
        await confirming
    assert (await got.wait_for(1))[0].payload == {"n": 1}
