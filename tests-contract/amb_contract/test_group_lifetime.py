"""A group's lifetime (docs/semantics.md, "A group's lifetime"): durable while no member runs,
removed with its backlog once no member has joined for ``group_expiry``, and looked after from
Python: listed with its pattern, members and backlog, purged, deleted."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pytest

from amb_contract.suite import WAIT
from amb_core import GroupInfo, GroupInUseError, InvalidTopicError, MessageBus
from amb_core.adapter import BACKLOG_NOTICE
from amb_core.testing import BusFactory, Recorder, eventually

pytestmark = pytest.mark.anyio

GROUP = "workers"
#: A short ``group_expiry`` for the test that lets a group expire.
EXPIRY = 2.0


async def _info(bus: MessageBus, topic: str) -> GroupInfo | None:
    """What ``bus`` lists about group ``workers`` on ``topic`` (None: there is no such group)."""
    found = [info for info in await bus.list_groups() if (info.group, info.pattern) == (GROUP, topic)]
    assert len(found) <= 1, found
    return found[0] if found else None


async def _has(bus: MessageBus, topic: str, *, members: int, backlog: int) -> bool:
    return await _info(bus, topic) == GroupInfo(GROUP, topic, members, backlog)


async def _abandoned_group(make_bus: BusFactory, topic: str, **options: float) -> MessageBus:
    """Group ``workers`` on ``topic``, joined by one member that handled one message and left;
    returns a bus (with ``options``) for the rest of the test."""
    worker, got = await make_bus(**options), Recorder(timeout=WAIT)
    subscription = await worker.subscribe(topic, got, group=GROUP)
    await worker.publish(topic, {"n": -1})
    await got.wait_for(1)
    await worker.unsubscribe(subscription)
    return worker


async def _publish(bus: MessageBus, topic: str, count: int) -> None:
    for n in range(count):
        await bus.publish(topic, {"n": n}, wait_for_confirmation=n == count - 1)


async def test_a_group_keeps_what_is_published_while_no_member_runs(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await _abandoned_group(amb_make_bus, amb_topic)
    await _publish(bus, amb_topic, 5)
    await eventually(
        lambda: _has(bus, amb_topic, members=0, backlog=5), "listed with 0 members and 5 waiting", within=WAIT
    )
    returning = amb_received()
    await (await amb_make_bus()).subscribe(amb_topic, returning, group=GROUP)
    await returning.wait_for(5)
    assert sorted(p["n"] for p in returning.payloads) == list(range(5))
    await eventually(
        lambda: _has(bus, amb_topic, members=1, backlog=0),
        "listed with 1 member and nothing waiting",
        within=WAIT,
    )


async def test_a_group_no_member_joined_for_group_expiry_is_removed_with_its_backlog(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await _abandoned_group(amb_make_bus, amb_topic, group_expiry=EXPIRY)
    await _publish(bus, amb_topic, 3)
    await eventually(lambda: _gone(bus, amb_topic), "removed after group_expiry", within=EXPIRY + WAIT)
    # A member joining the same name later starts a new group: the old backlog went with the old one.
    returning = amb_received()
    await (await amb_make_bus(group_expiry=EXPIRY)).subscribe(amb_topic, returning, group=GROUP)
    await bus.publish(amb_topic, {"n": "new"})
    await returning.wait_for(1)
    assert returning.payloads == [{"n": "new"}]


async def _gone(bus: MessageBus, topic: str) -> bool:
    return await _info(bus, topic) is None


async def test_purging_a_group_drops_its_backlog_and_keeps_the_group(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await _abandoned_group(amb_make_bus, amb_topic)
    await _publish(bus, amb_topic, 5)
    await eventually(lambda: _has(bus, amb_topic, members=0, backlog=5), "listed with 5 waiting", within=WAIT)
    assert await bus.purge_group(GROUP, amb_topic) == 5
    assert await _has(bus, amb_topic, members=0, backlog=0)
    assert await bus.purge_group(GROUP, f"{amb_topic}.nobody") == 0  # no such group: nothing to purge
    returning = amb_received()
    await (await amb_make_bus()).subscribe(amb_topic, returning, group=GROUP)
    await bus.publish(amb_topic, {"n": "after"})
    await returning.wait_for(1)
    assert returning.payloads == [{"n": "after"}]


async def test_deleting_a_group_is_refused_while_members_run_then_removes_it(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    worker, got = await amb_make_bus(), amb_received()
    subscription = await worker.subscribe(amb_topic, got, group=GROUP)
    admin = await amb_make_bus()
    await eventually(
        lambda: _has(admin, amb_topic, members=1, backlog=0), "listed with its member", within=WAIT
    )
    with pytest.raises(GroupInUseError):
        await admin.delete_group(GROUP, amb_topic)
    await worker.unsubscribe(subscription)
    await _publish(admin, amb_topic, 3)
    await eventually(
        lambda: _has(admin, amb_topic, members=0, backlog=3),
        "listed with no member and 3 waiting",
        within=WAIT,
    )
    assert await admin.delete_group(GROUP, amb_topic) is True
    assert await _info(admin, amb_topic) is None
    assert await admin.delete_group(GROUP, amb_topic) is False
    returning = amb_received()
    await worker.subscribe(amb_topic, returning, group=GROUP)
    await admin.publish(amb_topic, {"n": "after"})
    await returning.wait_for(1)
    assert returning.payloads == [{"n": "after"}]
    assert got.payloads == []


async def test_a_member_joining_a_big_backlog_says_so_once_at_info(
    amb_make_bus: BusFactory,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = await _abandoned_group(amb_make_bus, amb_topic)
    await _publish(bus, amb_topic, BACKLOG_NOTICE)
    await eventually(
        lambda: _has(bus, amb_topic, members=0, backlog=BACKLOG_NOTICE),
        "listed with its backlog",
        within=WAIT,
    )
    returning = amb_received()
    with caplog.at_level(logging.INFO, logger="amb"):
        await (await amb_make_bus()).subscribe(amb_topic, returning, group=GROUP)
        await returning.wait_for(BACKLOG_NOTICE)
    notices = [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.INFO
        and GROUP in record.getMessage()
        and amb_topic in record.getMessage()
    ]
    assert len(notices) == 1, notices
    assert re.search(rf"\b{BACKLOG_NOTICE} messages\b", notices[0]), notices


async def test_group_names_and_patterns_are_checked(amb_bus: MessageBus, amb_topic: str) -> None:
    with pytest.raises(InvalidTopicError):
        await amb_bus.purge_group("no spaces", amb_topic)
    with pytest.raises(InvalidTopicError):
        await amb_bus.delete_group(GROUP, "bad..pattern")
