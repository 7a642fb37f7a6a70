"""Logging (docs/semantics.md, "Middleware, trace context and logs"): a NullHandler on ``amb``,
one child logger per area, and records about a message that say which one."""

from __future__ import annotations

import logging

import pytest

from amb_core import InMemoryBroker, Message, MessageBus
from amb_core.testing import Recorder

pytestmark = pytest.mark.anyio


def test_amb_has_a_null_handler_and_nothing_else() -> None:
    import amb_core  # noqa: F401 - importing it is what installs the handler

    handlers = logging.getLogger("amb").handlers
    assert [type(handler) for handler in handlers] == [logging.NullHandler]


async def test_records_about_a_message_carry_its_topic_id_and_group(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="amb")
    done = Recorder(timeout=5)

    async def fails(message: Message) -> None:
        await done(message)
        raise RuntimeError("no")

    async with MessageBus(InMemoryBroker(max_attempts=1)) as bus:
        await bus.subscribe("work.items", fails, group="workers")
        message_id = await bus.publish("work.items", {})
        await done.wait_for(1)
    failure = next(r for r in caplog.records if r.levelno == logging.ERROR)
    dead = next(r for r in caplog.records if "dead-lettered" in r.getMessage())
    for record in (failure, dead):
        assert record.name == "amb.bus"
        assert (record.topic, record.message_id, record.group) == ("work.items", message_id, "workers")  # type: ignore[attr-defined]
