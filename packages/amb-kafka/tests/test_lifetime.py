"""Groups over time on Kafka (amb_kafka._lifetime): commits say when and with which
group_expiry, and a group found expired is deleted before a member joins it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from amb_core.testing import BusFactory, Recorder
from amb_kafka._lifetime import amb_group
from amb_kafka._naming import group_id
from conftest import WAIT

pytestmark = pytest.mark.anyio


async def test_a_members_commits_carry_the_time_and_group_expiry(
    amb_make_bus: BusFactory, amb_topic: str, admin: Any
) -> None:
    bus = await amb_make_bus(group_expiry=1234)
    got = Recorder(timeout=WAIT)
    subscription = await bus.subscribe(amb_topic, got, group="workers")
    await bus.publish(amb_topic, {"n": 1})
    await got.wait_for(1)
    await bus.unsubscribe(subscription)
    await bus.disconnect()  # leaves the group once its last commit is in
    offsets = await admin.list_consumer_group_offsets(group_id("workers", amb_topic))
    stamps = {committed.metadata.split()[0::2] == ["amb", "1234"] for committed in offsets.values()}
    assert offsets and stamps == {True}, offsets


async def test_an_expired_group_is_deleted_before_a_member_joins_it(
    amb_make_bus: BusFactory, amb_topic: str, admin: Any
) -> None:
    first = await amb_make_bus(group_expiry=0.001)
    subscription = await first.subscribe(amb_topic, Recorder(timeout=WAIT), group="workers")
    await first.unsubscribe(subscription)
    await first.disconnect()
    # Only an empty group expires; the coordinator may list the member that just left for a moment.
    await _until_empty(admin, group_id("workers", amb_topic))
    publisher = await amb_make_bus()
    await publisher.publish(amb_topic, {"n": "old"}, wait_for_confirmation=True)
    got = Recorder(timeout=WAIT)
    await (await amb_make_bus()).subscribe(amb_topic, got, group="workers")
    await publisher.publish(amb_topic, {"n": "new"})
    await got.wait_for(1)
    assert got.payloads == [{"n": "new"}]


async def _until_empty(admin: Any, consumer_group: str) -> None:
    with anyio.fail_after(WAIT):
        while True:
            [response] = await admin.describe_consumer_groups([consumer_group])
            if all(not described[5] for described in response.groups):
                return
            await anyio.sleep(0.1)


def test_only_consumer_groups_named_as_amb_names_them_are_amb_groups() -> None:
    assert amb_group("workers.orders.*") == ("workers", "orders.*")
    assert amb_group("connect-cluster") is None
    assert amb_group("bad..name") is None
