"""The readers never die: a record that is not a valid envelope is settled by the bus (dead-lettered
with its reason in a group, skipped by a broadcast), and an unexpected error in a reader's loop is
logged and the records not handed over are read again (issue 11, problem 1)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import pytest
from test_kafka import _records

from amb_core import Message, Subscription
from amb_core.testing import BusFactory, Recorder
from amb_kafka import KafkaBroker, _complaints
from amb_kafka._naming import dead_letter_topic
from conftest import WAIT

pytestmark = pytest.mark.anyio

#: Its timestamp overflows when made UTC: decoding it raised OverflowError, which killed the
#: group member's and the fan-out consumer's loops (the dead member kept its partition).
HOSTILE = b'{"amb":1,"id":"hostile","topic":"x","payload":{},"timestamp":"9999-12-31T23:59:59-23:59"}'


async def test_a_record_that_is_no_envelope_is_dead_lettered_and_stops_no_reader(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    # One partition: what this checks rides on the order of one partition's records.
    publisher, one, two = (
        await amb_make_bus(num_partitions=1),
        await amb_make_bus(num_partitions=1),
        await amb_make_bus(num_partitions=1),
    )
    grouped, watched = Recorder(timeout=WAIT), Recorder(timeout=WAIT)
    await one.subscribe(amb_topic, grouped, group="workers")
    await two.subscribe(amb_topic, grouped, group="workers")
    await one.subscribe(amb_topic, watched)
    adapter = publisher.adapter
    assert isinstance(adapter, KafkaBroker)
    await adapter.publish_raw(amb_topic, HOSTILE)
    for n in range(10):
        await publisher.publish(amb_topic, {"n": n})
    await grouped.wait_for(10)
    await watched.wait_for(10)
    assert sorted(p["n"] for p in grouped.payloads) == list(range(10))
    assert [p["n"] for p in watched.payloads] == list(range(10))

    [dead] = await _records(dead_letter_topic(amb_topic), 1)
    assert dead.value == HOSTILE  # unchanged
    headers = dict(dead.headers)
    assert b"OverflowError" in headers["amb-dlq-reason"]
    assert headers["amb-dlq-attempts"] == b"1"
    assert headers["amb-dlq-group"] == f"workers.{amb_topic}".encode()

    # Both members are alive: the next messages arrive too.
    for n in range(10, 20):
        await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=True)
    await grouped.wait_for(20)
    assert sorted(p["n"] for p in grouped.payloads) == list(range(20))


@pytest.mark.parametrize("how", ["group", "one subscription", "shared"])
async def test_an_unexpected_error_in_a_reader_is_logged_and_nothing_is_skipped(
    amb_make_bus: BusFactory,
    amb_topic: str,
    how: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in handing records over (here: the subscription raising once) must neither kill the
    reader silently nor lose the records of that fetch."""
    _complaints.reset()
    failed: list[str] = []

    def once(method: Any) -> Any:
        def failing_once(self: Subscription, *args: Any) -> Any:
            if self.pattern == amb_topic and not failed:
                failed.append(self.id)
                raise RuntimeError("a bug in handing over")
            return method(self, *args)

        return failing_once

    monkeypatch.setattr(Subscription, "receive", once(Subscription.receive))
    monkeypatch.setattr(Subscription, "offer", once(Subscription.offer))
    publisher, subscriber = await amb_make_bus(), await amb_make_bus()
    got, other = Recorder(timeout=WAIT), Recorder(timeout=WAIT)
    if how == "group":
        await subscriber.subscribe(amb_topic, got, group="workers")
    else:
        await subscriber.subscribe(amb_topic, got)
        if how == "shared":
            await subscriber.subscribe(amb_topic, other)
    for n in range(5):
        await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=n == 4)
    await got.wait_for(5)
    assert failed
    assert sorted({p["n"] for p in got.payloads}) == list(range(5))
    if how == "shared":
        await other.wait_for(5)
        assert sorted({p["n"] for p in other.payloads}) == list(range(5))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("amb")]
    assert any("read again" in r.getMessage() and r.exc_info for r in errors), errors
    # And the reader goes on.
    await publisher.publish(amb_topic, {"n": 5}, wait_for_confirmation=True)
    while {"n": 5} not in got.payloads:
        await got.wait_for(len(got.messages) + 1)


async def test_a_rebalance_that_completes_after_the_member_left_touches_nothing(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    """What printed ``consumer.pause(*assigned)`` -> AttributeError at shutdown (problem 13): the
    assignment callback of a member that had already stopped."""
    from aiokafka import TopicPartition  # type: ignore[import-untyped]

    bus = await amb_make_bus()
    await bus.subscribe(amb_topic, Recorder(timeout=WAIT), group="workers")
    adapter = bus.adapter
    assert isinstance(adapter, KafkaBroker)
    [member] = adapter._members.values()
    consumer = member._consumer
    await member.stop(0)
    await member.assigned(consumer, {TopicPartition(amb_topic, 0)})  # returns, raises nothing
    await member.revoked(consumer, {TopicPartition(amb_topic, 0)})


@pytest.mark.parametrize("group", ["workers", None])
async def test_a_consumer_whose_fetcher_died_fetches_again(
    amb_make_bus: BusFactory,
    amb_topic: str,
    group: str | None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiokafka's fetcher task ends on an assertion when a wildcard group's subscription changes
    as an assignment arrives (seen in the README example run 20 times), and nothing restarted
    it: the member kept its partitions and never fetched again."""
    from aiokafka.consumer.fetcher import Fetcher  # type: ignore[import-untyped]

    publisher, subscriber = await amb_make_bus(), await amb_make_bus()
    got = Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, got, group=group)
    original = Fetcher._get_actions_per_node
    failed: list[bool] = []

    def fails_once(self: Any, assignment: Any) -> Any:
        if not failed:
            failed.append(True)
            raise AssertionError("what aiokafka asserts when a rebalance overtakes its fetcher")
        return original(self, assignment)

    monkeypatch.setattr(Fetcher, "_get_actions_per_node", fails_once)
    for n in range(3):
        await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=True)
    await got.wait_for(3)
    assert failed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # handled: DEBUG


README_EXAMPLE_RUNS = 8


async def _readme_example(url_bus: Awaitable[Any], prefix: str) -> None:
    """The top-level README's example, on fresh topics under ``prefix``."""
    bus = await url_bus
    try:

        async def on_stuck(msg: Message) -> None:
            await bus.publish(f"{prefix}.help", {"for": msg.sender}, sender="helper-1")

        async def audit(msg: Message) -> None:
            pass

        async def verify(msg: Message) -> None:
            await bus.reply(msg, {"approved": msg.payload["action"] != "delete_file"})

        await bus.subscribe(f"{prefix}.stuck", on_stuck)
        await bus.subscribe(f"{prefix}.#", audit, group="auditors")
        await bus.subscribe(f"{prefix}.verification", verify)
        await bus.publish(f"{prefix}.thinking", {"thought": "Analyzing user request..."}, sender="agent-1")
        await bus.publish(f"{prefix}.stuck", {"reason": "Insufficient context"}, sender="agent-1")
        answer = await bus.request(f"{prefix}.verification", {"action": "delete_file"}, sender="agent-1")
        assert answer.payload == {"approved": False}
    finally:
        await bus.disconnect()


async def test_the_readme_example_on_fresh_topics_ends_without_an_error(
    amb_make_bus: BusFactory, amb_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """About 1 run in 5 used to end with the traceback above (a wildcard group rebalancing onto
    the topics the example creates while the bus closes)."""
    caplog.set_level(logging.WARNING)
    for run in range(README_EXAMPLE_RUNS):
        await _readme_example(amb_make_bus(), f"{amb_topic}.r{run}.agent")
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, "\n".join(errors)
