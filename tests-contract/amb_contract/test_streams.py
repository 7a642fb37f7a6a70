"""Reply streams: `request_stream` / `reply_stream`, their order, their errors, and the requester
going away (docs/semantics.md, "Reply streams")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from amb_contract.suite import URL, WAIT
from amb_core import (
    BusClosedError,
    Message,
    MessageBus,
    NoRespondersError,
    RemoteHandlerError,
    RequestCancelledError,
    RequestTimeoutError,
    StreamSequenceError,
)
from amb_core.testing import BusFactory

pytestmark = pytest.mark.anyio


async def _stream_of(bus: MessageBus, topic: str, count: int, *, concurrency: int = 1) -> None:
    """A responder that answers ``{"count": n}`` with n numbered chunks (``count`` by default)."""

    async def respond(request: Message) -> None:
        async with bus.reply_stream(request, sender="streamer") as stream:
            for n in range(request.payload.get("count", count)):
                await stream.send({"n": n, "for": request.payload.get("id")})

    await bus.subscribe(topic, respond, concurrency=concurrency)


async def _collect(chunks: AsyncIterator[Message]) -> list[Message]:
    return [chunk async for chunk in chunks]


class _Cancellable:
    """A responder that streams until its requester goes away, and records how that ended."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.cancelled = anyio.Event()
        self.sent_when_cancelled = -1
        self.ended_with: BaseException | None = None

    async def __call__(self, request: Message) -> None:
        async with self.bus.reply_stream(request) as stream:
            try:
                while True:
                    await stream.send({"n": stream.sent})
                    await anyio.sleep(0.01)
            except RequestCancelledError as error:
                self.sent_when_cancelled = stream.sent
                self.ended_with = error
                self.cancelled.set()
                raise


async def test_a_thousand_chunks_arrive_in_order(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    await _stream_of(responder, amb_topic, 1000)
    chunks = await _collect(requester.request_stream(amb_topic, {"id": 1}, timeout=WAIT))
    assert [chunk.payload["n"] for chunk in chunks] == list(range(1000))
    assert [chunk.metadata["amb-seq"] for chunk in chunks] == list(range(1000))
    assert {chunk.sender for chunk in chunks} == {"streamer"}
    assert {chunk.correlation_id for chunk in chunks} == {chunks[0].correlation_id}


async def test_a_hundred_concurrent_streams_on_one_bus(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    await _stream_of(responder, amb_topic, 20, concurrency=100)
    results: dict[int, list[int]] = {}

    async def ask(n: int) -> None:
        chunks = await _collect(requester.request_stream(amb_topic, {"id": n}, timeout=WAIT))
        assert {chunk.payload["for"] for chunk in chunks} == {n}
        results[n] = [chunk.payload["n"] for chunk in chunks]

    async with anyio.create_task_group() as group:
        for n in range(100):
            group.start_soon(ask, n)
    assert results == {n: list(range(20)) for n in range(100)}


async def test_an_empty_stream_ends_the_loop(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    await _stream_of(responder, amb_topic, 0)
    assert await _collect(requester.request_stream(amb_topic, timeout=WAIT)) == []


async def test_a_plain_reply_is_a_stream_of_one(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()

    async def answer(request: Message) -> None:
        await responder.reply(request, {"whole": True})

    await responder.subscribe(amb_topic, answer)
    [chunk] = await _collect(requester.request_stream(amb_topic, timeout=WAIT))
    assert chunk.payload == {"whole": True}


async def test_a_responder_that_fails_mid_stream_ends_it_with_its_error(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()

    async def fail_after_two(request: Message) -> None:
        async with responder.reply_stream(request) as stream:
            await stream.send({"n": 0})
            await stream.send({"n": 1})
            raise ValueError("the model went away")

    await responder.subscribe(amb_topic, fail_after_two)
    got: list[int] = []
    with pytest.raises(RemoteHandlerError) as raised:
        async for chunk in requester.request_stream(amb_topic, timeout=WAIT):
            got.append(chunk.payload["n"])
    assert got == [0, 1]
    assert raised.value.error_type == "ValueError"
    assert raised.value.error_message == "the model went away"


async def test_a_handler_that_fails_before_streaming_is_an_error_too(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()

    async def fail(request: Message) -> None:
        raise KeyError("brief")

    await responder.subscribe(amb_topic, fail)
    with pytest.raises(RemoteHandlerError) as raised:
        await _collect(requester.request_stream(amb_topic, timeout=WAIT))
    assert raised.value.error_type == "KeyError"


async def test_a_requester_that_breaks_after_three_chunks_cancels_the_responder(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responder_bus = await amb_make_bus(), await amb_make_bus()
    responder = _Cancellable(responder_bus)
    await responder_bus.subscribe(amb_topic, responder)
    got = 0
    async for _ in requester.request_stream(amb_topic, timeout=WAIT):
        got += 1
        if got == 3:
            break
    with anyio.fail_after(WAIT):
        await responder.cancelled.wait()
    assert isinstance(responder.ended_with, RequestCancelledError)
    assert responder.sent_when_cancelled >= 3
    # The handler ended quietly: the responder bus still answers.
    await _stream_of(responder_bus, amb_topic + ".next", 2)
    assert len(await _collect(requester.request_stream(amb_topic + ".next", timeout=WAIT))) == 2


async def test_a_requester_that_raises_in_its_loop_cancels_the_responder(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responder_bus = await amb_make_bus(), await amb_make_bus()
    responder = _Cancellable(responder_bus)
    await responder_bus.subscribe(amb_topic, responder)
    with pytest.raises(LookupError):
        async for _ in requester.request_stream(amb_topic, timeout=WAIT):
            raise LookupError("the requester changed its mind")
    with anyio.fail_after(WAIT):
        await responder.cancelled.wait()


async def test_a_requester_whose_task_is_cancelled_cancels_the_responder(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responder_bus = await amb_make_bus(), await amb_make_bus()
    responder = _Cancellable(responder_bus)
    await responder_bus.subscribe(amb_topic, responder)
    first = anyio.Event()

    async def listen() -> None:
        async for _ in requester.request_stream(amb_topic, timeout=WAIT):
            first.set()

    async with anyio.create_task_group() as group:
        group.start_soon(listen)
        await first.wait()
        group.cancel_scope.cancel()
    with anyio.fail_after(WAIT):
        await responder.cancelled.wait()


async def test_a_requester_that_times_out_between_chunks_cancels_the_responder(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responder_bus = await amb_make_bus(), await amb_make_bus()
    cancelled = anyio.Event()
    slow = anyio.Event()

    async def one_then_slow(request: Message) -> None:
        async with responder_bus.reply_stream(request) as stream:
            await stream.send({"n": 0})
            await slow.wait()  # longer than the requester's timeout
            try:
                while True:
                    await stream.send({"n": stream.sent})
                    await anyio.sleep(0.01)
            except RequestCancelledError:
                cancelled.set()
                raise

    await responder_bus.subscribe(amb_topic, one_then_slow)
    timeout = 2.0 if requester.capabilities.reports_no_responders else 5.0
    with pytest.raises(RequestTimeoutError) as raised:
        async for _ in requester.request_stream(amb_topic, timeout=timeout):
            pass
    assert not isinstance(raised.value, NoRespondersError)
    slow.set()
    with anyio.fail_after(WAIT):
        await cancelled.wait()


async def test_a_requester_that_closes_its_bus_cancels_the_responder(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    responder_bus = await amb_make_bus()
    responder = _Cancellable(responder_bus)
    await responder_bus.subscribe(amb_topic, responder)
    requester = MessageBus.from_url(URL)
    await requester.connect()
    chunks = requester.request_stream(amb_topic, timeout=WAIT)
    try:
        await chunks.__anext__()
        await requester.disconnect()
        with pytest.raises(BusClosedError):
            while True:
                await chunks.__anext__()
    finally:
        await requester.disconnect()
    with anyio.fail_after(WAIT):
        await responder.cancelled.wait()


async def test_a_responder_that_stops_sending_times_the_requester_out(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    stop = anyio.Event()

    async def hang(request: Message) -> None:
        async with responder.reply_stream(request) as stream:
            await stream.send({"n": 0})
            await stop.wait()

    await responder.subscribe(amb_topic, hang)
    got = []
    try:
        with anyio.fail_after(WAIT):
            with pytest.raises(RequestTimeoutError):
                async for chunk in requester.request_stream(amb_topic, timeout=1.0):
                    got.append(chunk)
    finally:
        stop.set()
    assert len(got) == 1


@pytest.mark.parametrize(
    ("numbers", "yielded", "expected"),
    [([0, 2], [0], "1 missing"), ([0, 1, 1], [0, 1], "arrived again"), ([1], [], "1 missing")],
    ids=["gap", "duplicate", "missing-first"],
)
async def test_a_missing_or_repeated_chunk_is_an_error(
    amb_make_bus: BusFactory, amb_topic: str, numbers: list[int], yielded: list[int], expected: str
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()

    async def garbled(request: Message) -> None:
        assert request.reply_to is not None
        for number in numbers:  # what a broker that lost or repeated a chunk would deliver
            await responder.publish(
                request.reply_to,
                {"n": number},
                correlation_id=request.correlation_id,
                metadata={"amb-seq": number},
            )

    await responder.subscribe(amb_topic, garbled)
    got = []
    with pytest.raises(StreamSequenceError, match=expected):
        async for chunk in requester.request_stream(amb_topic, timeout=WAIT):
            got.append(chunk.payload["n"])
    assert got == yielded


async def test_a_stream_nobody_can_answer(amb_make_bus: BusFactory, amb_topic: str) -> None:
    bus = await amb_make_bus()
    if bus.capabilities.reports_no_responders:
        with pytest.raises(NoRespondersError):
            await _collect(bus.request_stream(amb_topic, timeout=WAIT))
    else:
        with pytest.raises(RequestTimeoutError) as raised:
            await _collect(bus.request_stream(amb_topic, timeout=1.0))
        assert not isinstance(raised.value, NoRespondersError)


_STREAMER = """
import asyncio, os
from amb_core import MessageBus

async def main():
    bus = MessageBus.from_url(os.environ["AMB_URL"])
    await bus.connect()
    async def stream(request):
        async with bus.reply_stream(request) as chunks:
            n = 0
            while True:
                await chunks.send({"n": n})
                print("sent", n, flush=True)
                n += 1
                await asyncio.sleep(0.05)
    await bus.subscribe(os.environ["AMB_TOPIC"], stream)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.network
async def test_a_stream_whose_responder_process_is_killed_times_out(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    env = {**os.environ, "AMB_URL": URL, "AMB_TOPIC": amb_topic}
    process = await anyio.open_process([sys.executable, "-c", _STREAMER], env=env, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        with anyio.fail_after(WAIT * 2):
            assert (await process.stdout.receive()).startswith(b"ready")
        requester = await amb_make_bus()
        timeout = 2.0
        got = 0
        started = 0.0
        with anyio.fail_after(WAIT * 2), pytest.raises(RequestTimeoutError):
            async for _ in requester.request_stream(amb_topic, {"x": 1}, timeout=timeout):
                got += 1
                if got == 3:
                    process.kill()
                    await process.wait()
                    started = time.monotonic()
        assert got >= 3
        assert time.monotonic() - started >= timeout * 0.9
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()


async def test_metadata_sent_with_a_chunk_arrives_with_it(amb_make_bus: BusFactory, amb_topic: str) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()

    async def respond(request: Message) -> None:
        async with responder.reply_stream(request) as stream:
            await stream.send({"token": "hi"}, metadata={"model": "m-1"})

    await responder.subscribe(amb_topic, respond)
    [chunk] = await _collect(requester.request_stream(amb_topic, timeout=WAIT))
    assert chunk.metadata == {"model": "m-1", "amb-seq": 0}
