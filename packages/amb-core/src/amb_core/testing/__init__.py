"""Helpers for testing code that uses the bus: record what a subscription receives and await it,
build payloads at the limits, put a faulty peer between a bus and its broker, wait for state no
event announces, and restart the broker under test.

The pytest fixtures built on them (``amb_url``, ``amb_make_bus``, ``amb_topic``, ...) are in
`amb_core.testing.plugin`, which pytest loads by itself; this module does not import pytest."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio

from amb_core._message import Message
from amb_core.testing._broker_control import BrokerControl, BrokerProcess
from amb_core.testing._broker_table import BrokerEntry, load_broker_table
from amb_core.testing._waiting import eventually, publish_until_delivered

if TYPE_CHECKING:
    from amb_core import MessageBus

__all__ = [
    "BrokerControl",
    "BrokerEntry",
    "BrokerProcess",
    "BusFactory",
    "FaultyProxy",
    "Recorder",
    "eventually",
    "load_broker_table",
    "nested_payload",
    "publish_until_delivered",
]

#: ``await make_bus(**options)``: a connected bus (the ``amb_make_bus`` fixture is one).
BusFactory = Callable[..., Awaitable["MessageBus"]]


class Recorder:
    """A handler that keeps every message it gets and lets a test wait for some:

    ```python
    got = Recorder()
    await bus.subscribe("agent.thinking", got)
    await bus.publish("agent.thinking", {"n": 1})
    [message] = await got.wait_for(1)
    ```
    """

    def __init__(self, *, timeout: float = 30.0) -> None:
        """``timeout`` bounds every `wait_for`: a safety net, not a timing assertion."""
        self.messages: list[Message] = []
        self.timeout = timeout
        self._waiters: list[tuple[int, anyio.Event]] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        for count, event in self._waiters:
            if len(self.messages) >= count:
                event.set()

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [message.payload for message in self.messages]

    async def wait_for(self, count: int) -> list[Message]:
        """The first ``count`` messages, once they are in; AssertionError after `timeout` s."""
        if len(self.messages) < count:
            waiter = (count, anyio.Event())
            self._waiters.append(waiter)
            try:
                with anyio.fail_after(self.timeout):
                    await waiter[1].wait()
            except TimeoutError:
                raise AssertionError(
                    f"expected {count} messages within {self.timeout} s, got {len(self.messages)}"
                ) from None
            finally:
                self._waiters.remove(waiter)
        return self.messages[:count]


def nested_payload(depth: int) -> dict[str, Any]:
    """A payload that nests objects ``depth`` levels deep, the payload itself being level 1
    (`amb_core.adapter.MAX_DEPTH` is the most a publish accepts)."""
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(depth - 1):
        inner["x"] = {}
        inner = inner["x"]
    return payload


class FaultyProxy:
    """A TCP proxy in front of a broker that a test turns into a faulty peer, disturbing only
    the buses that connect through it (so tests can share one broker).

    In mode ``"forward"`` it relays to the broker; ``"silent"`` accepts connections and never
    answers; ``"refuse"`` accepts and hangs up at once. `cut` drops every connection it holds,
    as a network failure would; `stop` also stops listening (connection refused, as for a broker
    that is down) until `start` listens again on the same port. ``accepted`` counts the
    connections taken, ``open_connections`` the forwarded ones still open at both ends;
    `expect` gives an event set by the next connection in a mode, and ``silent_closed`` /
    ``forward_closed`` an event per connection, set once it has ended.
    """

    MODES = ("forward", "silent", "refuse")

    def __init__(self, host: str, port: int) -> None:
        self.mode = "forward"
        self.port = 0
        self.accepted = 0
        self.open_connections = 0
        self.silent_closed: list[anyio.Event] = []
        self.forward_closed: list[anyio.Event] = []
        self._target = (host, port)
        self._arrived = {mode: anyio.Event() for mode in self.MODES}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, url: str) -> str:
        """``url`` (scheme, credentials, path and query kept) pointed at this proxy."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        address = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{credentials}@{address}" if credentials else address))

    async def start(self) -> None:
        """Listen (again, on the same port after `stop`)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def expect(self, mode: str) -> anyio.Event:
        """A fresh event, set by the next connection that arrives in ``mode``."""
        self._arrived[mode] = anyio.Event()
        return self._arrived[mode]

    def cut(self) -> None:
        """Drop every connection at once."""
        writers, self._writers = self._writers, set()
        for writer in writers:
            writer.transport.abort()

    async def stop(self) -> None:
        """Drop every connection and stop listening; returns once every relay has ended."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.cut()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def close(self) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        mode = self.mode
        self._arrived[mode].set()
        self._writers.add(writer)
        closed = anyio.Event()
        try:
            if mode == "refuse":
                return
            if mode == "silent":
                self.silent_closed.append(closed)
                with contextlib.suppress(OSError):
                    while await reader.read(1 << 16):
                        pass  # never answers
                return
            self.forward_closed.append(closed)
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
            except OSError:
                return
            self._writers.add(up_writer)
            self.open_connections += 1
            try:
                await asyncio.gather(_relay(reader, up_writer), _relay(up_reader, writer))
            finally:
                self.open_connections -= 1
        except asyncio.CancelledError:
            pass  # closed with the proxy (asyncio's server would log a handler ending cancelled)
        finally:
            closed.set()
            writer.close()
            self._tasks.discard(task)


async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        with contextlib.suppress(OSError):
            while data := await source.read(1 << 16):
                sink.write(data)
                await sink.drain()
    finally:
        sink.close()
