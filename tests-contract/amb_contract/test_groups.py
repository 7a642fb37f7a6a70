"""Groups: each message to exactly one member of a group; every group and every ungrouped
subscription gets its own copy."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from amb_core import MessageBus
from amb_core.testing import BusFactory, Recorder

pytestmark = pytest.mark.anyio


async def test_a_group_shares_the_work_and_coexists_with_others(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    worker_bus_1, worker_bus_2, publisher = (
        await amb_make_bus(),
        await amb_make_bus(),
        await amb_make_bus(),
    )
    workers, auditors, listener = amb_received(), amb_received(), amb_received()
    # Three members of one group (one handler object records for all of them), on two buses.
    await worker_bus_1.subscribe(amb_topic, workers, group="workers")
    await worker_bus_2.subscribe(amb_topic, workers, group="workers")
    await worker_bus_2.subscribe(amb_topic, workers, group="workers")
    await worker_bus_1.subscribe(amb_topic, auditors, group="auditors")
    await publisher.subscribe(amb_topic, listener)

    count = 30
    for n in range(count):
        await publisher.publish(amb_topic, {"n": n})

    for got in (listener, auditors, workers):
        await got.wait_for(count)
        assert sorted(p["n"] for p in got.payloads[:count]) == list(range(count))
    # One more message behind the others: a duplicate of an earlier one would show up first.
    await publisher.publish(amb_topic, {"n": count})
    await workers.wait_for(count + 1)
    assert sorted(p["n"] for p in workers.payloads) == list(range(count + 1))


async def test_groups_are_told_apart_by_pattern(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    exact, wildcard = amb_received(), amb_received()
    await amb_bus.subscribe(f"{amb_topic}.a", exact, group="team")
    await amb_bus.subscribe(f"{amb_topic}.*", wildcard, group="team")
    await amb_bus.publish(f"{amb_topic}.a", {"n": 1})
    await exact.wait_for(1)
    await wildcard.wait_for(1)


async def test_a_group_member_that_leaves_hands_over_to_the_rest(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    first_bus, second_bus = await amb_make_bus(), await amb_make_bus()
    leaving, staying = amb_received(), amb_received()
    leaving_id = await first_bus.subscribe(amb_topic, leaving, group="workers")
    await second_bus.subscribe(amb_topic, staying, group="workers")
    await first_bus.unsubscribe(leaving_id)
    for n in range(10):
        await first_bus.publish(amb_topic, {"n": n})
    await staying.wait_for(10)
    assert sorted(p["n"] for p in staying.payloads) == list(range(10))
    assert leaving.payloads == []
