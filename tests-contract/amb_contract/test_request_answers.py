"""What a requester learns besides a reply: nobody can answer, the handler failed, and the
request's deadline (docs/semantics.md, "Request/reply")."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import anyio
import pytest

from amb_contract.suite import WAIT
from amb_core import Message, MessageBus, NoRespondersError, RemoteHandlerError, RequestTimeoutError
from amb_core.testing import BusFactory, Recorder

pytestmark = pytest.mark.anyio


async def _warm(bus: MessageBus, make_bus: BusFactory) -> None:
    """One answered request first: the inbox is open and the broker connection warm, so what
    is timed next is only the request itself."""
    responder = await make_bus()
    topic = f"contract.warm.{time.monotonic_ns()}"

    async def answer(request: Message) -> None:
        await responder.reply(request)

    await responder.subscribe(topic, answer)
    await bus.request(topic, timeout=WAIT)


async def test_a_request_nobody_receives_fails_at_once_where_the_broker_tells(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    bus = await amb_make_bus()
    await _warm(bus, amb_make_bus)
    if bus.capabilities.reports_no_responders:
        started = time.monotonic()
        with pytest.raises(NoRespondersError) as raised:
            await bus.request(amb_topic, {"n": 1}, timeout=WAIT)
        assert time.monotonic() - started < 0.1
        # Code written for timeouts keeps working.
        assert isinstance(raised.value, RequestTimeoutError)
        assert isinstance(raised.value, TimeoutError)
    else:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as timed_out:
            await bus.request(amb_topic, {"n": 1}, timeout=1.0)
        assert not isinstance(timed_out.value, NoRespondersError)
        assert time.monotonic() - started >= 0.9


async def test_a_failed_handler_answers_with_its_error(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()

    async def fail(request: Message) -> None:
        raise ValueError(f"cannot review {request.payload['doc']}")

    await responder.subscribe(amb_topic, fail)
    started = time.monotonic()
    with pytest.raises(RemoteHandlerError) as raised:
        await requester.request(amb_topic, {"doc": "a.md"}, timeout=WAIT)
    assert time.monotonic() - started < WAIT  # at once, not after the timeout
    error = raised.value
    assert (error.error_type, error.error_message) == ("ValueError", "cannot review a.md")
    assert "ValueError: cannot review a.md" in str(error)
    assert error.reply.correlation_id is not None


async def test_a_failed_group_handler_answers_after_its_last_attempt(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus(max_attempts=3)
    attempts = amb_received()

    async def fail(request: Message) -> None:
        await attempts(request)
        raise RuntimeError("model overloaded")

    await responder.subscribe(amb_topic, fail, group="workers")
    with pytest.raises(RemoteHandlerError) as raised:
        await requester.request(amb_topic, timeout=WAIT)
    assert raised.value.error_type == "RuntimeError"
    # Answered only when dead-lettered: after every attempt.
    assert len(attempts.messages) == 3


async def test_a_handler_that_answered_then_failed_answers_once(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()

    async def answer_then_fail(request: Message) -> None:
        await responder.reply(request, {"ok": True})
        raise RuntimeError("after the reply")

    await responder.subscribe(amb_topic, answer_then_fail)
    reply = await requester.request(amb_topic, timeout=WAIT)
    assert reply.payload == {"ok": True}


async def test_a_request_lives_as_long_as_its_requester_waits(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    got: list[Message] = []
    busy = anyio.Event()
    release = anyio.Event()

    async def handle(request: Message) -> None:
        got.append(request)
        if request.payload["n"] == 0:
            busy.set()
            await release.wait()
        await responder.reply(request, {"n": request.payload["n"]})

    await responder.subscribe(amb_topic, handle)

    async def first() -> None:
        await requester.request(amb_topic, {"n": 0}, timeout=WAIT)

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        await busy.wait()
        # Queued behind the busy handler until after its requester gave up: never handled.
        with pytest.raises(RequestTimeoutError):
            await requester.request(amb_topic, {"n": 1}, timeout=0.5)
        release.set()
    reply = await requester.request(amb_topic, {"n": 2}, timeout=WAIT)
    assert reply.payload == {"n": 2}
    assert [request.payload["n"] for request in got] == [0, 2]


async def test_expires_at_tells_the_handler_its_deadline(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    seen: list[Message] = []

    async def handle(request: Message) -> None:
        seen.append(request)
        await responder.reply(request)

    await responder.subscribe(amb_topic, handle)
    await requester.request(amb_topic, timeout=12.5)
    await requester.request(amb_topic, timeout=12.5, ttl=60)
    default, explicit = seen
    assert default.ttl == 12.5
    assert default.expires_at == default.timestamp + timedelta(seconds=12.5)
    assert explicit.expires_at == explicit.timestamp + timedelta(seconds=60)
    assert default.expires_at is not None and default.expires_at.tzinfo is not None
    assert default.expires_at > datetime.now(timezone.utc)
