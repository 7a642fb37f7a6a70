"""Groups over time on Kafka (amb_kafka.lifetime): commits say when and with which
group_expiry, and a group found expired is deleted before a member joins it."""

from __future__ import annotations

from typing import Any

import pytest

from amb_kafka.lifetime import amb_group
from amb_kafka.naming import group_id
from conftest import BusFactory, Received

pytestmark = pytest.mark.anyio


async def test_a_members_commits_carry_the_time_and_group_expiry(
    make_bus: BusFactory, topic: str, admin: Any
) -> None:
    bus = await make_bus(group_expiry=1234)
    got = Received()
    subscription = await bus.subscribe(topic, got, group="workers")
    await bus.publish(topic, {"n": 1})
    await got.wait_for(1)
    await bus.unsubscribe(subscription)
    await bus.disconnect()  # leaves the group once its last commit is in
    offsets = await admin.list_consumer_group_offsets(group_id("workers", topic))
    stamps = {committed.metadata.split()[0::2] == ["amb", "1234"] for committed in offsets.values()}
    assert offsets and stamps == {True}, offsets


async def test_an_expired_group_is_deleted_before_a_member_joins_it(make_bus: BusFactory, topic: str) -> None:
    first = await make_bus(group_expiry=0.001)
    subscription = await first.subscribe(topic, Received(), group="workers")
    await first.unsubscribe(subscription)
    await first.disconnect()
    publisher = await make_bus()
    await publisher.publish(topic, {"n": "old"}, wait_for_confirmation=True)
    got = Received()
    await (await make_bus()).subscribe(topic, got, group="workers")
    await publisher.publish(topic, {"n": "new"})
    await got.wait_for(1)
    assert got.payloads == [{"n": "new"}]


def test_only_consumer_groups_named_as_amb_names_them_are_amb_groups() -> None:
    assert amb_group("workers.orders.*") == ("workers", "orders.*")
    assert amb_group("connect-cluster") is None
    assert amb_group("bad..name") is None
