"""Fixtures for amb-redis's tests, which run against a real Redis (``AMB_REDIS_URL``)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
import redis.asyncio as redis

from amb_core import MessageBus
from amb_core.testing import Recorder

URL = os.environ.get("AMB_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def topic() -> str:
    return f"redis-test.{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def admin() -> AsyncIterator[redis.Redis]:
    """A plain redis-py client, to look at and tamper with what the adapter keeps in Redis."""
    client = redis.Redis.from_url(URL)
    yield client
    await client.aclose()


BusFactory = Callable[..., Awaitable[MessageBus]]


@pytest.fixture
async def make_bus() -> AsyncIterator[BusFactory]:
    buses: list[MessageBus] = []

    async def make(*, url: str = URL, drain_timeout: float = 5.0, **options: Any) -> MessageBus:
        bus = MessageBus.from_url(url, drain_timeout=drain_timeout, **options)
        await bus.connect()
        buses.append(bus)
        return bus

    yield make
    for bus in reversed(buses):
        await bus.disconnect()


class Received(Recorder):
    """`amb_core.testing.Recorder`, bounded by `WAIT`."""

    def __init__(self) -> None:
        super().__init__(timeout=WAIT)


async def kill_connections(admin: redis.Redis, client_name: str) -> int:
    """Close, server side, every connection named ``client_name`` (only the buses of one test)."""
    killed = 0
    for client in await admin.client_list():
        if client.get("name") == client_name:
            killed += await admin.client_kill_filter(_id=client["id"])
    return killed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault: restarts Redis through scripts/services.py")


async def eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``condition()`` holds (for state that changes inside Redis, where there is
    no event to await), failing after `WAIT` seconds."""
    with anyio.fail_after(WAIT):
        while not await condition():  # noqa: ASYNC110 - the state lives in Redis: nothing to await
            await anyio.sleep(0.01)


class LogWaiter(logging.Handler):
    """Lets a test await a log record of logger ``amb`` whose message contains some text."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.records: list[logging.LogRecord] = []
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.records.append(record)
            self.seen.set()

    async def wait(self) -> logging.LogRecord:
        with anyio.fail_after(WAIT):
            await self.seen.wait()
        return self.records[0]


@pytest.fixture
def log_waiter() -> Iterator[Callable[[str], LogWaiter]]:
    logger = logging.getLogger("amb")
    waiters: list[LogWaiter] = []

    def make(text: str) -> LogWaiter:
        waiter = LogWaiter(text)
        logger.addHandler(waiter)
        waiters.append(waiter)
        return waiter

    yield make
    for waiter in waiters:
        logger.removeHandler(waiter)


class Proxy:
    """A TCP proxy in front of the test Redis that a test turns into a faulty peer: in mode
    ``forward`` it relays to Redis, in ``silent`` it accepts connections and never answers, in
    ``refuse`` it accepts and hangs up at once; `cut` closes every connection it holds. Only
    this test's buses go through it, so nobody else on the shared Redis is disturbed."""

    def __init__(self, host: str, port: int) -> None:
        self.mode = "forward"
        self.port = 0
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: Set when a connection arrives in the mode named.
        self.arrived = {mode: anyio.Event() for mode in ("forward", "silent", "refuse")}
        #: For each silent connection, set once the client has closed it.
        self.silent_closed: list[anyio.Event] = []
        #: For each forwarded connection, set once both sides have closed it.
        self.forward_closed: list[anyio.Event] = []

    @property
    def url(self) -> str:
        """The test Redis's URL (credentials, database, options) with the proxy's address."""
        parts = urlsplit(URL)
        credentials = parts.netloc.rpartition("@")[0]
        address = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{credentials}@{address}" if credentials else address))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def expect(self, mode: str) -> anyio.Event:
        """A fresh event set by the next connection arriving in ``mode``."""
        self.arrived[mode] = anyio.Event()
        return self.arrived[mode]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        mode = self.mode
        self.arrived[mode].set()
        self._writers.append(writer)
        try:
            if mode == "refuse":
                return
            if mode == "silent":
                closed = anyio.Event()
                self.silent_closed.append(closed)
                try:
                    while await reader.read(1 << 16):
                        pass  # never answers
                except OSError:
                    pass
                closed.set()
                return
            closed = anyio.Event()
            self.forward_closed.append(closed)
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            self._writers.append(up_writer)
            await asyncio.gather(_relay(reader, up_writer), _relay(up_reader, writer))
            closed.set()
        except asyncio.CancelledError:
            pass  # closed by the fixture (asyncio's server logs a handler that ends cancelled)
        finally:
            writer.close()
            self._tasks.discard(task)

    def cut(self) -> None:
        """Drop every connection at once, as a network failure would."""
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(1 << 16):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    parts = urlsplit(URL)
    running = Proxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await running.start()
    yield running
    await running.close()
