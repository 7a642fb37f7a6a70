"""Groups: each message to exactly one member of a group; every group and every ungrouped
subscription gets its own copy."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from amb_core import MessageBus
from conftest import BusFactory, Received

pytestmark = pytest.mark.anyio


async def test_a_group_shares_the_work_and_coexists_with_others(
    make_bus: BusFactory, topic: str, received: Callable[[], Received]
) -> None:
    worker_bus_1, worker_bus_2, publisher = (
        await make_bus(),
        await make_bus(),
        await make_bus(),
    )
    workers, auditors, listener = received(), received(), received()
    # Three members of one group (one handler object records for all of them), on two buses.
    await worker_bus_1.subscribe(topic, workers, group="workers")
    await worker_bus_2.subscribe(topic, workers, group="workers")
    await worker_bus_2.subscribe(topic, workers, group="workers")
    await worker_bus_1.subscribe(topic, auditors, group="auditors")
    await publisher.subscribe(topic, listener)

    count = 30
    for n in range(count):
        await publisher.publish(topic, {"n": n})

    for got in (listener, auditors, workers):
        await got.wait_for(count)
        assert sorted(p["n"] for p in got.payloads[:count]) == list(range(count))
    # One more message behind the others: a duplicate of an earlier one would show up first.
    await publisher.publish(topic, {"n": count})
    await workers.wait_for(count + 1)
    assert sorted(p["n"] for p in workers.payloads) == list(range(count + 1))


async def test_groups_are_told_apart_by_pattern(
    bus: MessageBus, topic: str, received: Callable[[], Received]
) -> None:
    exact, wildcard = received(), received()
    await bus.subscribe(f"{topic}.a", exact, group="team")
    await bus.subscribe(f"{topic}.*", wildcard, group="team")
    await bus.publish(f"{topic}.a", {"n": 1})
    await exact.wait_for(1)
    await wildcard.wait_for(1)


async def test_a_group_member_that_leaves_hands_over_to_the_rest(
    make_bus: BusFactory, topic: str, received: Callable[[], Received]
) -> None:
    first_bus, second_bus = await make_bus(), await make_bus()
    leaving, staying = received(), received()
    leaving_id = await first_bus.subscribe(topic, leaving, group="workers")
    await second_bus.subscribe(topic, staying, group="workers")
    await first_bus.unsubscribe(leaving_id)
    for n in range(10):
        await first_bus.publish(topic, {"n": n})
    await staying.wait_for(10)
    assert sorted(p["n"] for p in staying.payloads) == list(range(10))
    assert leaving.payloads == []
