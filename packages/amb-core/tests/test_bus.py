"""Rules of the bus that only the in-memory broker can show directly (the shared rules are in
tests-contract, which also runs against memory)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from amb_core import (
    BusClosedError,
    InMemoryBroker,
    Message,
    MessageBus,
    NoRespondersError,
    RequestTimeoutError,
)
from amb_core.testing import Recorder

pytestmark = pytest.mark.anyio


async def test_a_full_queue_makes_the_publisher_wait() -> None:
    release = anyio.Event()
    handled = Recorder()

    async def slow(message: Message) -> None:
        await release.wait()
        await handled(message)

    async with MessageBus(queue_size=2) as bus:
        await bus.subscribe("work", slow)
        await bus.publish("work", {"n": 0})  # taken by the handler
        await anyio.lowlevel.checkpoint()
        await bus.publish("work", {"n": 1})
        await bus.publish("work", {"n": 2})  # the queue is full now
        third = asyncio.ensure_future(bus.publish("work", {"n": 3}))
        await anyio.sleep(0.01)
        assert not third.done(), "publish waits while the queue is full"
        release.set()
        await third
        await handled.wait_for(4)
        assert [m.payload["n"] for m in handled.messages] == [0, 1, 2, 3]


async def test_leaving_the_context_delivers_what_is_queued() -> None:
    release = anyio.Event()
    handled = Recorder()

    async def slow(message: Message) -> None:
        await release.wait()
        await handled(message)

    bus = MessageBus()
    async with bus:
        await bus.subscribe("work", slow)
        for n in range(5):
            await bus.publish("work", {"n": n})
        asyncio.get_running_loop().call_soon(release.set)
    assert [m.payload["n"] for m in handled.messages] == [0, 1, 2, 3, 4]


async def test_the_drain_timeout_bounds_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    started = anyio.Event()

    async def stuck(message: Message) -> None:
        started.set()
        await anyio.sleep_forever()

    bus = MessageBus(drain_timeout=0.05)
    async with bus:
        await bus.subscribe("work", stuck)
        await bus.publish("work", {"n": 0})
        await bus.publish("work", {"n": 1})
        await started.wait()
    assert "drain timeout" in caplog.text
    assert "1 queued messages" in caplog.text


async def test_idle_subscriptions_cost_no_task() -> None:
    async with MessageBus() as bus:
        before = len(asyncio.all_tasks())
        handler = Recorder()
        for n in range(10_000):
            await bus.subscribe(f"idle.t{n}", handler)
        assert len(asyncio.all_tasks()) == before
        await bus.publish("idle.t7", {})
        await handler.wait_for(1)


async def test_back_to_back_requests_reuse_the_worker_that_just_answered() -> None:
    """A worker looks at its queue once more after each message; a request that comes in
    meanwhile is its, even with room for more workers: no task is made for it (one costs more
    than the rest of an in-memory request)."""
    loop = asyncio.get_running_loop()
    created = 0

    def counting_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        nonlocal created
        created += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    async with MessageBus() as bus:

        async def answer(message: Message) -> None:
            await bus.reply(message, {"ok": True})

        await bus.subscribe("ask", answer, concurrency=4)
        await bus.request("ask", {}, timeout=5)  # the inbox and the first worker
        loop.set_task_factory(counting_factory)
        try:
            for _ in range(20):
                await bus.request("ask", {}, timeout=5)
        finally:
            loop.set_task_factory(None)
    assert created == 0


async def test_a_plain_function_works_as_a_handler() -> None:
    seen: list[Message] = []
    done = anyio.Event()

    def handler(message: Message) -> None:
        seen.append(message)
        done.set()

    async with MessageBus() as bus:
        await bus.subscribe("plain", handler)
        await bus.publish("plain", {"x": 1})
        with anyio.fail_after(5):
            await done.wait()
    assert seen[0].payload == {"x": 1}


async def test_the_publisher_keeps_its_payload_to_itself() -> None:
    handled = Recorder()
    async with MessageBus() as bus:
        await bus.subscribe("t", handled)
        payload = {"n": 0}
        for n in range(3):
            payload["n"] = n
            await bus.publish("t", payload)
        await handled.wait_for(3)
    assert [m.payload["n"] for m in handled.messages] == [0, 1, 2]


async def test_buses_from_one_memory_url_share_a_broker_and_plain_buses_do_not() -> None:
    shared = Recorder()
    async with MessageBus.from_url("memory://team") as a, MessageBus.from_url("memory://team") as b:
        await a.subscribe("t", shared)
        await b.publish("t", {"from": "b"})
        await shared.wait_for(1)
    private = Recorder()
    async with MessageBus() as c, MessageBus() as d:
        await c.subscribe("t", private)
        await d.publish("t", {"from": "d"}, wait_for_confirmation=True)
        await c.publish("t", {"from": "c"})
        await private.wait_for(1)
    assert [m.payload for m in private.messages] == [{"from": "c"}]


async def test_a_confirmed_publish_nobody_receives_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    async with MessageBus() as bus:
        await bus.publish("critical.task", {"task": "important"}, wait_for_confirmation=True)
    assert "no subscription receives" in caplog.text


async def _never_answers(message: Message) -> None:
    pass


async def test_requests_pending_at_close_fail_with_a_connection_error() -> None:
    bus = MessageBus()
    await bus.connect()
    await bus.subscribe("nobody.answers", _never_answers)
    request = asyncio.ensure_future(bus.request("nobody.answers", {}, timeout=30))
    await anyio.sleep(0.01)
    await bus.disconnect()
    with pytest.raises(BusClosedError):
        await request


async def test_bad_arguments_are_refused() -> None:
    async with MessageBus() as bus:
        with pytest.raises(ValueError):
            await bus.subscribe("t", Recorder(), concurrency=0)
        with pytest.raises(TypeError):
            await bus.subscribe("t", "not callable")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await bus.publish("t", {}, ttl=-1)
        with pytest.raises(ValueError):
            await bus.publish("t", {}, priority="highest")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MessageBus(queue_size=0)
    with pytest.raises(TypeError):
        InMemoryBroker("memory://", unexpected=1)


async def test_handler_errors_go_to_the_amb_logger(caplog: pytest.LogCaptureFixture) -> None:
    failed = anyio.Event()

    async def broken(message: Message) -> None:
        failed.set()
        raise KeyError("boom")

    async with MessageBus() as bus:
        await bus.subscribe("t", broken)
        await bus.publish("t", {})
        await failed.wait()
    records = [r for r in caplog.records if r.name.startswith("amb") and r.levelno == logging.ERROR]
    assert records and "broken" in records[0].getMessage()


async def test_requests_time_out_in_deadline_order_whatever_order_they_were_made() -> None:
    failed: list[float] = []

    async def ask(bus: MessageBus, timeout: float) -> None:
        with pytest.raises(RequestTimeoutError, match=f"within {timeout} s"):
            await bus.request("nobody.answers", {}, timeout=timeout)
        failed.append(timeout)

    async with MessageBus() as bus, anyio.create_task_group() as tasks:
        await bus.subscribe("nobody.answers", _never_answers)
        for timeout in (0.3, 0.05, 0.2, 0.1):
            tasks.start_soon(ask, bus, timeout)
    assert failed == [0.05, 0.1, 0.2, 0.3]


async def test_a_timeout_still_fires_after_many_answered_requests() -> None:
    async with MessageBus() as bus:

        async def echo(message: Message) -> None:
            await bus.reply(message, {"n": message.payload["n"]})

        await bus.subscribe("echo", echo)
        for n in range(500):  # leaves answered entries behind in the inbox's deadline heap
            assert (await bus.request("echo", {"n": n}, timeout=30)).payload == {"n": n}
        with pytest.raises(RequestTimeoutError):
            await bus.request("nobody.answers", {}, timeout=0.05)
        assert (await bus.request("echo", {"n": -1}, timeout=30)).payload == {"n": -1}


async def test_stream_timeouts_on_the_inbox_timer_survive_many_finished_streams_and_requests() -> None:
    async with MessageBus() as bus:

        async def two(message: Message) -> None:
            async with bus.reply_stream(message) as stream:
                await stream.send({"n": 0})
                await stream.send({"n": 1})

        done = anyio.Event()

        async def one_then_silence(message: Message) -> None:
            async with bus.reply_stream(message) as stream:
                await stream.send({"n": 0})
                await done.wait()

        await bus.subscribe("two", two, concurrency=4)
        await bus.subscribe("silent", one_then_silence)
        await bus.subscribe("nobody.answers", _never_answers, concurrency=200)
        async with anyio.create_task_group() as tasks:
            for n in range(300):  # leaves finished streams' deadlines in the inbox's heap
                assert len([chunk async for chunk in bus.request_stream("two", timeout=30)]) == 2
                if n % 3 == 0:  # and compacts it among requests' deadlines
                    tasks.start_soon(_times_out, bus)
        got = []
        with pytest.raises(RequestTimeoutError):
            async for chunk in bus.request_stream("silent", timeout=0.05):
                got.append(chunk.payload)
        done.set()
        assert got == [{"n": 0}]


async def _times_out(bus: MessageBus) -> None:
    with pytest.raises(RequestTimeoutError) as raised:
        await bus.request("nobody.answers", {}, timeout=0.05)
    assert not isinstance(raised.value, NoRespondersError)


async def test_a_recorder_says_what_it_got_when_a_wait_runs_out() -> None:
    got = Recorder(timeout=0.01)
    with pytest.raises(AssertionError, match=r"expected 1 messages within 0\.01 s, got 0"):
        await got.wait_for(1)
