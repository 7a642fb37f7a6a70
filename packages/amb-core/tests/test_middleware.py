"""Middleware (docs/semantics.md, "Middleware"): hooks around publish, handling and requests, their
order, the outcomes they see, and a broken middleware that loses nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from amb_core import InMemoryBroker, Message, MessageBus, RequestTimeoutError
from amb_core import middleware as middleware_module
from amb_core.middleware import Call, Handling, Middleware, Next, Outcome, with_metadata
from amb_core.testing import Recorder

pytestmark = pytest.mark.anyio


class Journal(Middleware):
    """Writes what it sees, with its name, to a shared list."""

    def __init__(self, name: str, journal: list[Any]) -> None:
        self.name = name
        self.journal = journal

    async def publish(self, bus: MessageBus, message: Message, call_next: Next) -> None:
        self.journal.append((self.name, "publish", message.topic))
        await call_next(with_metadata(message, {self.name: True}))
        self.journal.append((self.name, "published", message.topic))

    async def handle(self, bus: MessageBus, message: Message, handling: Handling, call_next: Next) -> None:
        self.journal.append((self.name, "handle", message.topic))
        try:
            await call_next(message)
        finally:
            self.journal.append((self.name, "handled", handling.outcome, type(handling.error).__name__))

    async def call(self, bus: MessageBus, call: Call[Any], call_next: Callable[[], Awaitable[None]]) -> None:
        self.journal.append((self.name, call.kind, call.topic))
        await call_next()
        self.journal.append((self.name, f"{call.kind} done", type(call.result).__name__))


async def test_publish_and_handle_hooks_run_in_list_order_the_first_outermost() -> None:
    journal: list[Any] = []
    got = Recorder(timeout=5)
    async with MessageBus(middlewares=[Journal("outer", journal), Journal("inner", journal)]) as bus:
        await bus.subscribe("work", got)
        await bus.publish("work", {"n": 1})
        (message,) = await got.wait_for(1)
    assert message.metadata == {"outer": True, "inner": True}  # added before encoding
    assert journal == [
        ("outer", "publish", "work"),
        ("inner", "publish", "work"),
        ("inner", "published", "work"),
        ("outer", "published", "work"),
        ("outer", "handle", "work"),
        ("inner", "handle", "work"),
        ("inner", "handled", Outcome.HANDLED, "NoneType"),
        ("outer", "handled", Outcome.HANDLED, "NoneType"),
    ]


class Counting(Journal):
    """A `Journal` that says when it has seen ``target`` handled messages."""

    def __init__(self, journal: list[Any]) -> None:
        super().__init__("j", journal)
        self.target = 0
        self.reached = asyncio.Event()

    async def handle(self, bus: MessageBus, message: Message, handling: Handling, call_next: Next) -> None:
        try:
            await super().handle(bus, message, handling, call_next)
        finally:
            if sum(entry[1] == "handled" for entry in self.journal) >= self.target:
                self.reached.set()

    async def until(self, target: int) -> None:
        self.target = target
        self.reached.clear()
        if sum(entry[1] == "handled" for entry in self.journal) < target:
            with anyio.fail_after(5):
                await self.reached.wait()


async def test_handle_sees_every_outcome() -> None:
    journal: list[Any] = []
    counting = Counting(journal)
    async with MessageBus(InMemoryBroker(max_attempts=2), middlewares=[counting]) as bus:

        async def fails(message: Message) -> None:
            raise RuntimeError("no")

        await bus.subscribe("grouped", fails, group="g")
        await bus.subscribe("broadcast", fails)
        await bus.publish("grouped", {})
        await bus.publish("broadcast", {})
        await counting.until(3)  # retried, dead-lettered, raised
        blocked = asyncio.Event()

        async def slow(message: Message) -> None:
            await blocked.wait()

        await bus.subscribe("slow", slow)
        await bus.publish("slow", {"first": True})
        await bus.publish("slow", {"expires": True}, ttl=0.01)
        await asyncio.sleep(0.05)  # the second one's ttl runs out while the first is handled
        blocked.set()
        await counting.until(5)
    outcomes = sorted((entry[2].value, entry[3]) for entry in journal if entry[1] == "handled")
    assert outcomes == [
        ("dead_lettered", "RuntimeError"),
        ("expired", "NoneType"),
        ("handled", "NoneType"),
        ("raised", "RuntimeError"),
        ("retried", "RuntimeError"),
    ]


async def test_call_hooks_run_around_request_reply_gather_and_request_stream() -> None:
    journal: list[Any] = []
    async with MessageBus(middlewares=[Journal("j", journal)]) as bus:

        async def answer(message: Message) -> None:
            await bus.reply(message, {"ok": True})

        async def stream(message: Message) -> None:
            async with bus.reply_stream(message) as chunks:
                for n in range(3):
                    await chunks.send({"n": n})

        await bus.subscribe("ask", answer)
        await bus.subscribe("draft", stream)
        reply = await bus.request("ask", {}, timeout=5)
        replies = await bus.gather("ask", {}, timeout=5, max_replies=1)
        chunks = [chunk.payload["n"] async for chunk in bus.request_stream("draft", {}, timeout=5)]
    assert reply.payload == {"ok": True} and len(replies) == 1 and chunks == [0, 1, 2]
    calls = [entry for entry in journal if entry[1] not in ("publish", "published", "handle", "handled")]
    assert ("j", "request", "ask") in calls and ("j", "request done", "Message") in calls
    assert ("j", "gather", "ask") in calls and ("j", "gather done", "Replies") in calls
    assert ("j", "request_stream", "draft") in calls and ("j", "request_stream done", "Message") in calls
    assert sum(entry[1] == "reply" for entry in calls) == 2
    assert sum(entry[1] == "publish" and entry[2] == "draft" for entry in journal) == 1


async def test_errors_of_the_bus_raise_through_the_hooks_unchanged() -> None:
    journal: list[Any] = []
    seen: list[BaseException] = []

    class Watcher(Middleware):
        async def call(
            self, bus: MessageBus, call: Call[Any], call_next: Callable[[], Awaitable[None]]
        ) -> None:
            try:
                await call_next()
            except BaseException as error:
                seen.append(error)
                raise

    async with MessageBus(middlewares=[Watcher(), Journal("j", journal)]) as bus:
        await bus.subscribe("silent", Recorder())
        with pytest.raises(RequestTimeoutError):
            await bus.request("silent", {}, timeout=0.05)
    assert len(seen) == 1 and isinstance(seen[0], RequestTimeoutError)


class Broken(Middleware):
    """Raises in each hook, before or after passing on."""

    def __init__(self, after: bool) -> None:
        self.after = after

    async def publish(self, bus: MessageBus, message: Message, call_next: Next) -> None:
        if self.after:
            await call_next(message)
        raise ValueError("broken publish hook")

    async def handle(self, bus: MessageBus, message: Message, handling: Handling, call_next: Next) -> None:
        if self.after:
            await call_next(message)
        raise ValueError("broken handle hook")

    async def call(self, bus: MessageBus, call: Call[Any], call_next: Callable[[], Awaitable[None]]) -> None:
        if self.after:
            await call_next()
        raise ValueError("broken call hook")


class Lazy(Middleware):
    """Never passes anything on."""

    async def publish(self, bus: MessageBus, message: Message, call_next: Next) -> None:
        return None

    async def handle(self, bus: MessageBus, message: Message, handling: Handling, call_next: Next) -> None:
        return None


@pytest.mark.parametrize(
    "broken", [Broken(after=False), Broken(after=True), Lazy()], ids=["before", "after", "lazy"]
)
async def test_a_broken_middleware_loses_nothing_and_is_logged(
    broken: Middleware, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="amb")
    got = Recorder(timeout=5)
    async with MessageBus(middlewares=[broken]) as bus:
        await bus.subscribe("work", got)

        async def answer(message: Message) -> None:
            await bus.reply(message, {"ok": True})

        await bus.subscribe("ask", answer)
        for n in range(10):
            await bus.publish("work", {"n": n})
        assert (await bus.request("ask", {}, timeout=5)).payload == {"ok": True}
        await got.wait_for(10)
        await asyncio.sleep(0.05)
    assert got.payloads == [{"n": n} for n in range(10)]  # each once, in order
    complaints = [r for r in caplog.records if r.name == "amb.middleware" and r.levelno == logging.WARNING]
    assert complaints and all(type(broken).__name__ in r.getMessage() for r in complaints)
    assert len(complaints) <= 3 * 5  # throttled: at most a burst per hook


async def test_installed_middlewares_wrap_every_new_bus_until_uninstalled() -> None:
    journal: list[Any] = []

    def factory() -> Middleware:
        return Journal("global", journal)

    middleware_module.install(factory)
    try:
        async with MessageBus.from_url("memory://", middlewares=[Journal("own", journal)]) as bus:
            await bus.publish("t", {})
    finally:
        middleware_module.uninstall(factory)
    async with MessageBus() as bus:
        await bus.publish("t", {})
    assert [entry[0] for entry in journal] == ["global", "own", "own", "global"]


async def test_middlewares_must_be_middleware() -> None:
    with pytest.raises(TypeError, match="Middleware"):
        MessageBus(middlewares=[object()])  # type: ignore[list-item]
