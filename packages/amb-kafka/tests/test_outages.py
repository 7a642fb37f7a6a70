"""Kafka stopped under running buses: the adapter notices, the bus keeps what is published and
bounds confirmed publishes, nothing is lost, and the log says it in a few lines (issue 11,
problems 7 and 12). Each test stops and starts the launcher's Kafka."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
import pytest

from amb_core import BrokerUnavailableError, MessageBus
from amb_core.testing import BrokerProcess, BusFactory, Recorder
from conftest import WAIT

pytestmark = pytest.mark.anyio


async def _until(condition: Callable[[], bool]) -> None:
    """For state that offers nothing to await (an adapter's view of its connection)."""
    with anyio.fail_after(WAIT * 2):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)


def _down(bus: MessageBus) -> bool:
    link = bus.adapter.link
    assert link is not None
    return not link.up


async def test_an_outage_loses_nothing_bounds_confirmed_publishes_and_is_told_in_a_few_lines(
    amb_make_bus: BusFactory, amb_topic: str, amb_broker: BrokerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    # One partition: what this checks rides on the order of one partition's records.
    outage_timeout = 5.0
    subscriber = await amb_make_bus(num_partitions=1)
    steady = await amb_make_bus(num_partitions=1, outage_timeout=300)  # publishes all along, never gives up
    impatient = await amb_make_bus(num_partitions=1, outage_timeout=outage_timeout)
    grouped, watched = Recorder(timeout=WAIT), Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, grouped, group="workers")
    await subscriber.subscribe(amb_topic, watched)
    await impatient.publish(amb_topic, {"warm": 1}, wait_for_confirmation=True)
    await steady.publish(amb_topic, {"warm": 2}, wait_for_confirmation=True)
    await grouped.wait_for(2)
    caplog.clear()
    caplog.set_level(logging.WARNING)

    sent: list[int] = []
    stop_publishing = anyio.Event()

    async def publish_all_along() -> None:
        # Some of these are in aiokafka's hands when the broker goes, some are kept by the bus.
        n = 0
        while not stop_publishing.is_set():
            await steady.publish(amb_topic, {"steady": n})
            sent.append(n)
            n += 1
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(publish_all_along)
        stopped = anyio.Event()

        async def stop() -> None:
            await amb_broker.stop()  # returns once the process has exited
            stopped.set()

        tasks.start_soon(stop)
        await _until(lambda: _down(impatient) and _down(subscriber))  # noticed without a publish
        kept = [await impatient.publish(amb_topic, {"kept": n}) for n in range(200)]  # at once, kept
        assert len(kept) == 200
        started = time.monotonic()
        with anyio.fail_after(outage_timeout + 5), pytest.raises(BrokerUnavailableError):
            await impatient.publish(amb_topic, {"confirmed": True}, wait_for_confirmation=True)
        assert time.monotonic() - started <= outage_timeout + 1
        await stopped.wait()
        await amb_broker.start()
        await _until(lambda: not _down(steady))
        stop_publishing.set()

    def have(key: str, count: int) -> bool:
        return {p[key] for p in grouped.payloads if key in p} >= set(range(count))

    with anyio.fail_after(WAIT * 3):
        while not (have("kept", 200) and have("steady", len(sent))):
            await grouped.wait_for(len(grouped.messages) + 1)
    kept_order = list(dict.fromkeys(p["kept"] for p in grouped.payloads if "kept" in p))
    assert kept_order == list(range(200))  # one publisher, one partition: in order
    # The broadcast subscription resumed too.
    await steady.publish(amb_topic, {"after": True}, wait_for_confirmation=True)
    with anyio.fail_after(WAIT):
        while {"after": True} not in watched.payloads:
            await watched.wait_for(len(watched.messages) + 1)

    lines = [
        f"{r.name} {r.levelname}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING
    ]
    # One line lost and one back per bus (three buses), nothing from aiokafka; and, should the
    # broker take over a minute to come back (a loaded machine), the Link's once-a-minute reminder.
    told = [
        line for line in lines if not line.startswith("amb.link WARNING: ") or "still unreachable" not in line
    ]
    assert len(told) <= 6, "\n".join(lines)
    assert all(line.startswith("amb.") for line in lines), "\n".join(lines)


async def test_a_bus_closed_during_an_outage_closes_at_once_and_names_what_was_not_sent(
    amb_make_bus: BusFactory, amb_topic: str, amb_broker: BrokerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await amb_make_bus(drain_timeout=1)
    await bus.publish(amb_topic, {"n": -1}, wait_for_confirmation=True)
    await amb_broker.stop()
    await _until(lambda: _down(bus))
    ids = [await bus.publish(amb_topic, {"n": n}) for n in range(5)]
    with anyio.fail_after(15):
        await bus.disconnect()
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert all(message_id in errors for message_id in ids), errors
