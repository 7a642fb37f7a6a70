"""Reply-stream rules that only the in-memory broker shows directly: its chunks skip the
coroutine of an ordinary publish (`InMemoryBroker.publish_now`), and that path must keep every
rule of the ordinary one (the shared rules are in tests-contract's test_streams)."""

from __future__ import annotations

from datetime import datetime, timezone

import anyio
import anyio.lowlevel
import pytest

from amb_core import BusClosedError, Message, MessageBus, ReplyStream
from amb_core.testing import Recorder

pytestmark = pytest.mark.anyio


async def test_chunks_for_a_full_queue_wait_for_room_and_each_receiver_gets_each_once() -> None:
    """Chunks go to the request's ``reply_to``; when that is an ordinary topic, a receiver with
    a full queue makes the responder wait, and no receiver loses or repeats a chunk."""
    release = anyio.Event()
    slow, fast = Recorder(), Recorder()
    streams: list[ReplyStream] = []

    async def stuck_until_released(message: Message) -> None:
        await slow(message)
        await release.wait()

    async with (
        MessageBus.from_url("memory://full-queue") as responder,
        MessageBus.from_url("memory://full-queue", queue_size=1) as small,
        MessageBus.from_url("memory://full-queue") as roomy,
    ):

        async def stream_fifty(request: Message) -> None:
            async with responder.reply_stream(request) as stream:
                streams.append(stream)
                for n in range(50):
                    await stream.send({"n": n})

        await small.subscribe("answers", stuck_until_released)
        await roomy.subscribe("answers", fast)
        await responder.subscribe("work", stream_fifty)
        await responder.publish("work", {}, correlation_id="question-1", reply_to="answers")
        await fast.wait_for(2)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        # One chunk in the slow handler, one in its queue, the next waiting for room.
        assert streams[0].sent <= 3
        release.set()
        # 50 chunks and the end mark.
        assert [m.metadata.get("amb-seq") for m in await fast.wait_for(51)] == list(range(51))
        assert [m.metadata.get("amb-seq") for m in await slow.wait_for(51)] == list(range(51))


async def test_chunks_carry_the_time_they_were_sent() -> None:
    """A burst of chunks may share a stamp (read at most every 100 µs), never an old one."""
    resume = anyio.Event()

    async with MessageBus() as bus:

        async def burst_pause_burst(request: Message) -> None:
            async with bus.reply_stream(request) as stream:
                for n in range(100):
                    await stream.send({"n": n})
                await resume.wait()
                for n in range(100, 200):
                    await stream.send({"n": n})

        await bus.subscribe("talk", burst_pause_burst)
        stamps: list[datetime] = []
        async for chunk in bus.request_stream("talk", timeout=30):
            received = datetime.now(timezone.utc)
            assert chunk.timestamp.tzinfo is not None
            assert chunk.timestamp <= received
            stamps.append(chunk.timestamp)
            if len(stamps) == 100:
                paused = datetime.now(timezone.utc)
                await anyio.sleep(0.01)  # the clock moves on while the responder waits
                resume.set()
        assert stamps == sorted(stamps)
        assert stamps[100] > paused  # read again after the pause, not the burst's stamp


async def test_chunk_ids_are_unique_and_not_the_requests() -> None:
    async with MessageBus() as bus:

        async def three(request: Message) -> None:
            async with bus.reply_stream(request) as stream:
                for n in range(3):
                    await stream.send({"n": n})

        await bus.subscribe("talk", three, concurrency=2)
        ids = [chunk.id for _ in range(2) async for chunk in bus.request_stream("talk", timeout=30)]
        assert len(set(ids)) == 6


async def test_a_stream_on_a_closed_bus_refuses_to_send() -> None:
    bus = MessageBus()
    await bus.connect()
    request = Message(
        id="question-1", topic="talk", payload={}, correlation_id="question-1", reply_to="answers"
    )
    with pytest.raises(BusClosedError):  # leaving the block cannot end the stream either
        async with bus.reply_stream(request) as stream:
            await stream.send({"n": 0})
            await stream.send({"n": 1})
            await bus.disconnect()
            with pytest.raises(BusClosedError):
                await stream.send({"n": 2})
    assert stream.sent == 2
