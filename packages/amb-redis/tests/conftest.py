"""Fixtures for amb-redis's tests, which run against a real Redis (``AMB_REDIS_URL``)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
import redis.asyncio as redis

from amb_core import MessageBus
from amb_core.testing import FaultyProxy, Recorder

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


@pytest.fixture
async def proxy() -> AsyncIterator[FaultyProxy]:
    """A faulty peer in front of the test Redis: only the test's buses go through it, so nobody
    else on the shared Redis is disturbed."""
    parts = urlsplit(URL)
    running = FaultyProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await running.start()
    yield running
    await running.close()
