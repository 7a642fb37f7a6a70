"""Groups on the in-memory broker, where the bus keeps them itself: what only memory can show
directly (the shared rules are in tests-contract/amb_contract/test_group_lifetime.py and test_keys.py)."""

from __future__ import annotations

import logging
from collections import deque

import anyio
import pytest

from amb_core import BrokerUnavailableError, GroupInfo, Message, MessageBus
from amb_core import _memory as memory_module
from amb_core.testing import Recorder

pytestmark = pytest.mark.anyio


async def test_a_backlog_taken_through_a_small_queue_keeps_publish_order() -> None:
    # The member's queue holds 2: the backlog goes in a little at a time while new messages are
    # published, and those must queue behind it, not overtake it.
    publisher = MessageBus.from_url("memory://small-queue", queue_size=2)
    worker = MessageBus.from_url("memory://small-queue", queue_size=2)
    got = Recorder(timeout=10)
    async with publisher, worker:
        first = await worker.subscribe("jobs", Recorder(), group="workers")
        await worker.unsubscribe(first)
        for n in range(50):
            await publisher.publish("jobs", {"n": n})
        await worker.subscribe("jobs", got, group="workers")
        for n in range(50, 100):
            await publisher.publish("jobs", {"n": n})
        await got.wait_for(100)
    assert [p["n"] for p in got.payloads] == list(range(100))


async def test_a_full_backlog_makes_publishers_wait_then_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_module, "MAX_GROUP_BACKLOG", 3)
    async with MessageBus.from_url("memory://full-backlog", outage_timeout=0.2) as bus:
        await bus.unsubscribe(await bus.subscribe("jobs", Recorder(), group="workers"))
        for n in range(3):
            await bus.publish("jobs", {"n": n})
        with anyio.fail_after(5), pytest.raises(BrokerUnavailableError, match="outage_timeout"):
            await bus.publish("jobs", {"n": 3})
        # A member taking the backlog makes room: the publisher goes on.
        got = Recorder(timeout=10)
        await bus.subscribe("jobs", got, group="workers")
        await bus.publish("jobs", {"n": 4})
        await got.wait_for(4)
        assert [p["n"] for p in got.payloads] == [0, 1, 2, 4]


async def test_a_failed_message_whose_member_left_waits_for_the_next_member() -> None:
    started, left = anyio.Event(), anyio.Event()
    async with MessageBus.from_url("memory://retry-later") as bus:

        async def fails(message: Message) -> None:
            started.set()
            await left.wait()
            raise RuntimeError("not now")

        first = await bus.subscribe("jobs", fails, group="workers")
        await bus.publish("jobs", {"n": 1})
        await started.wait()
        await bus.unsubscribe(first)  # the call in flight finishes (and fails) after this
        left.set()
        got = Recorder(timeout=10)
        await bus.subscribe("jobs", got, group="workers")
        [message] = await got.wait_for(1)
        assert message.payload == {"n": 1}
        assert bus.adapter.dead_letters == deque()  # type: ignore[attr-defined]


async def test_an_expired_group_is_removed_when_next_published_to(caplog: pytest.LogCaptureFixture) -> None:
    async with MessageBus.from_url("memory://expiring", group_expiry=0.05) as bus:
        await bus.unsubscribe(await bus.subscribe("jobs", Recorder(), group="workers"))
        await bus.publish("jobs", {"n": 1})
        assert await bus.list_groups() == [GroupInfo("workers", "jobs", 0, 1)]
        await anyio.sleep(0.1)  # the clock group_expiry is about
        with caplog.at_level(logging.INFO, logger="amb"):
            await bus.publish("jobs", {"n": 2}, wait_for_confirmation=True)
        assert "no member for group_expiry (0.05 s): removed it with its 1 messages" in caplog.text
        assert await bus.list_groups() == []


async def test_group_expiry_must_be_a_positive_number_of_seconds() -> None:
    for bad in (0, -1, "week", True):
        with pytest.raises(ValueError, match="group_expiry"):
            MessageBus.from_url("memory://", group_expiry=bad)
