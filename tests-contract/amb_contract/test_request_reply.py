"""Request/reply: one, many at once, timeouts and late replies."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import pytest

from amb_core import Message, MessageBus, RequestTimeoutError
from amb_core.testing import BusFactory, Recorder

pytestmark = pytest.mark.anyio


async def _echo(bus: MessageBus, topic: str) -> None:
    async def answer(request: Message) -> None:
        await bus.reply(request, {"echo": request.payload["n"], "request_id": request.id})

    await bus.subscribe(topic, answer, concurrency=16)


async def test_a_request_gets_its_reply(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    await _echo(responder, amb_topic)
    reply = await requester.request(amb_topic, {"n": 7}, timeout=30)
    assert reply.payload["echo"] == 7
    assert reply.correlation_id is not None


async def test_hundreds_of_concurrent_requests_on_one_bus(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    await _echo(responder, amb_topic)
    replies: dict[int, Message] = {}

    async def ask(n: int) -> None:
        replies[n] = await requester.request(amb_topic, {"n": n}, timeout=60)

    async with anyio.create_task_group() as group:
        for n in range(200):
            group.start_soon(ask, n)
    assert sorted(replies) == list(range(200))
    assert all(reply.payload["echo"] == n for n, reply in replies.items())


async def test_a_request_nobody_answers_times_out(amb_bus: MessageBus, amb_topic: str) -> None:
    with pytest.raises(RequestTimeoutError) as raised:
        await amb_bus.request(amb_topic, {"n": 1}, timeout=0.2)
    assert isinstance(raised.value, TimeoutError)


async def test_a_late_reply_is_dropped_not_redelivered(
    amb_make_bus: BusFactory,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    release = anyio.Event()
    answered = amb_received()

    async def slow_then_fast(request: Message) -> None:
        if request.payload["n"] == 1:
            await release.wait()
        await responder.reply(request, {"n": request.payload["n"]})
        await answered(request)

    await responder.subscribe(amb_topic, slow_then_fast)
    everything = amb_received()
    await requester.subscribe("*.*.*", everything)  # wildcards never see the bus's own replies
    caplog.set_level(logging.DEBUG, logger="amb")
    with pytest.raises(RequestTimeoutError):
        await requester.request(amb_topic, {"n": 1}, timeout=0.2)
    release.set()
    # The responder answers in order, so this reply arrives after the late one.
    reply = await requester.request(amb_topic, {"n": 2}, timeout=30)
    assert reply.payload == {"n": 2}
    assert any("dropped reply" in record.getMessage() for record in caplog.records)
    assert all(not message.topic.startswith("_amb.inbox") for message in everything.messages)


async def test_reply_without_a_request_is_an_error(amb_bus: MessageBus, amb_topic: str) -> None:
    with pytest.raises(ValueError):
        await amb_bus.reply(Message(id="x", topic=amb_topic), {"n": 1})
