"""What happens while messages wait for a busy subscription: priority, TTL, concurrency,
confirmation, and shutdown."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from amb_contract.suite import WAIT
from amb_core import Message, MessageBus, MessagePriority
from amb_core.testing import BusFactory, Recorder

pytestmark = pytest.mark.anyio


class Gate:
    """A handler that holds its first message until the test opens the gate."""

    def __init__(self, record: Recorder) -> None:
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
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    got, probe = amb_received(), amb_received()
    gate = Gate(got)
    await amb_bus.subscribe(amb_topic, gate)
    await amb_bus.subscribe(amb_topic, probe)  # sees every message without waiting
    await amb_bus.publish(amb_topic, {"p": "first"})
    await gate.wait_until_holding()
    order = [
        MessagePriority.LOW,
        MessagePriority.NORMAL,
        MessagePriority.URGENT,
        MessagePriority.HIGH,
    ]
    for priority in order:
        await amb_bus.publish(amb_topic, {"p": priority.name}, priority=priority, wait_for_confirmation=True)
    await probe.wait_for(5)
    gate.open.set()
    await got.wait_for(5)
    names = [p["p"] for p in got.payloads]
    assert names[0] == "first"
    if amb_bus.capabilities.priority:
        assert names[1:] == ["URGENT", "HIGH", "NORMAL", "LOW"]
    else:
        assert names[1:] == [priority.name for priority in order]


async def test_a_message_that_expired_while_waiting_is_never_handled(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    got = amb_received()
    gate = Gate(got)
    await amb_bus.subscribe(amb_topic, gate)
    await amb_bus.publish(amb_topic, {"n": "first"})
    await gate.wait_until_holding()
    await amb_bus.publish(amb_topic, {"n": "expires"}, ttl=0.05)
    await amb_bus.publish(amb_topic, {"n": "lives"}, ttl=3600)
    await anyio.sleep(0.3)  # the subject under test is the clock: let the first ttl run out
    gate.open.set()
    await amb_bus.publish(amb_topic, {"n": "last"})
    await got.wait_for(3)
    assert [p["n"] for p in got.payloads] == ["first", "lives", "last"]


async def test_concurrency_runs_handlers_side_by_side(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    release = anyio.Event()
    started = amb_received()

    async def hold(message: Message) -> None:
        await started(message)
        await release.wait()

    await amb_bus.subscribe(amb_topic, hold, concurrency=3)
    for n in range(3):
        await amb_bus.publish(amb_topic, {"n": n})
    await started.wait_for(3)  # three calls are in flight at once
    release.set()


async def test_a_confirmed_publish_returns_its_id_once_the_broker_has_it(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    got = amb_received()
    await amb_bus.subscribe(amb_topic, got)
    message_id = await amb_bus.publish(amb_topic, {"n": 1}, wait_for_confirmation=True)
    [message] = await got.wait_for(1)
    assert message.id == message_id
    nobody_listens = await amb_bus.publish(f"{amb_topic}.nobody", {"n": 2}, wait_for_confirmation=True)
    assert isinstance(nobody_listens, str) and nobody_listens


async def test_leaving_the_context_lets_running_handlers_finish(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    publisher = await amb_make_bus()
    got = amb_received()
    gate = Gate(got)
    finished = anyio.Event()
    closing = await amb_make_bus(drain_timeout=WAIT)
    await closing.subscribe(amb_topic, gate)
    await publisher.publish(amb_topic, {"n": 1})
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
