"""What happens while messages wait for a busy subscription: priority, TTL, concurrency,
confirmation, and shutdown."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from amb_core import Message, MessageBus, MessagePriority
from conftest import WAIT, BusFactory, Received

pytestmark = pytest.mark.anyio


class Gate:
    """A handler that holds its first message until the test opens the gate."""

    def __init__(self, record: Received) -> None:
        self.record = record
        self.holding = anyio.Event()
        self.open = anyio.Event()

    async def __call__(self, message: Message) -> None:
        if not self.holding.is_set():
            self.holding.set()
            await self.open.wait()
        await self.record(message)

    async def wait_until_holding(self) -> None:
        with anyio.fail_after(WAIT):
            await self.holding.wait()


async def test_waiting_messages_come_out_highest_priority_first(
    bus: MessageBus, topic: str, received: Callable[[], Received]
) -> None:
    got, probe = received(), received()
    gate = Gate(got)
    await bus.subscribe(topic, gate)
    await bus.subscribe(topic, probe)  # sees every message without waiting
    await bus.publish(topic, {"p": "first"})
    await gate.wait_until_holding()
    order = [
        MessagePriority.LOW,
        MessagePriority.NORMAL,
        MessagePriority.URGENT,
        MessagePriority.HIGH,
    ]
    for priority in order:
        await bus.publish(topic, {"p": priority.name}, priority=priority, wait_for_confirmation=True)
    await probe.wait_for(5)
    gate.open.set()
    await got.wait_for(5)
    names = [p["p"] for p in got.payloads]
    assert names[0] == "first"
    if bus.capabilities.priority:
        assert names[1:] == ["URGENT", "HIGH", "NORMAL", "LOW"]
    else:
        assert names[1:] == [priority.name for priority in order]


async def test_a_message_that_expired_while_waiting_is_never_handled(
    bus: MessageBus, topic: str, received: Callable[[], Received]
) -> None:
    got = received()
    gate = Gate(got)
    await bus.subscribe(topic, gate)
    await bus.publish(topic, {"n": "first"})
    await gate.wait_until_holding()
    await bus.publish(topic, {"n": "expires"}, ttl=0.05)
    await bus.publish(topic, {"n": "lives"}, ttl=3600)
    await anyio.sleep(0.3)  # the subject under test is the clock: let the first ttl run out
    gate.open.set()
    await bus.publish(topic, {"n": "last"})
    await got.wait_for(3)
    assert [p["n"] for p in got.payloads] == ["first", "lives", "last"]


async def test_concurrency_runs_handlers_side_by_side(
    bus: MessageBus, topic: str, received: Callable[[], Received]
) -> None:
    release = anyio.Event()
    started = received()

    async def hold(message: Message) -> None:
        await started(message)
        await release.wait()

    await bus.subscribe(topic, hold, concurrency=3)
    for n in range(3):
        await bus.publish(topic, {"n": n})
    await started.wait_for(3)  # three calls are in flight at once
    release.set()


async def test_a_confirmed_publish_returns_its_id_once_the_broker_has_it(
    bus: MessageBus, topic: str, received: Callable[[], Received]
) -> None:
    got = received()
    await bus.subscribe(topic, got)
    message_id = await bus.publish(topic, {"n": 1}, wait_for_confirmation=True)
    [message] = await got.wait_for(1)
    assert message.id == message_id
    nobody_listens = await bus.publish(f"{topic}.nobody", {"n": 2}, wait_for_confirmation=True)
    assert isinstance(nobody_listens, str) and nobody_listens


async def test_leaving_the_context_lets_running_handlers_finish(
    make_bus: BusFactory, topic: str, received: Callable[[], Received]
) -> None:
    publisher = await make_bus()
    got = received()
    gate = Gate(got)
    finished = anyio.Event()
    closing = await make_bus(drain_timeout=WAIT)
    await closing.subscribe(topic, gate)
    await publisher.publish(topic, {"n": 1})
    await gate.wait_until_holding()

    async def close() -> None:
        await closing.disconnect()
        finished.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(close)
        await anyio.lowlevel.checkpoint()
        assert not finished.is_set()
        gate.open.set()
        with anyio.fail_after(WAIT):
            await finished.wait()
    assert got.payloads[0] == {"n": 1}, "the handler in flight finished, it was not cancelled"
    assert not closing.is_connected
