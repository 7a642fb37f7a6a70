"""Fixtures for amb-redis's tests, which run against a real Redis (``AMB_REDIS_URL``): amb_core's
pytest plugin (``amb_make_bus``, ``amb_topic``, ``amb_proxy``, ``amb_broker``...) pointed at it,
and what only these tests need."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio as redis

from amb_core.testing import BrokerControl, load_broker_table

ROOT = Path(__file__).resolve().parents[3]
URL = load_broker_table(ROOT / "brokers.json")["redis"].url
WAIT = 30.0


@pytest.fixture
def amb_url() -> str:
    return URL


@pytest.fixture
def amb_broker_control() -> BrokerControl:
    return BrokerControl.launcher_script(ROOT / "scripts" / "services.py", "redis")


@pytest.fixture
async def admin() -> AsyncIterator[redis.Redis]:
    """A plain redis-py client, to look at and tamper with what the adapter keeps in Redis."""
    client = redis.Redis.from_url(URL)
    yield client
    await client.aclose()


async def kill_connections(admin: redis.Redis, client_name: str) -> int:
    """Close, server side, every connection named ``client_name`` (only the buses of one test)."""
    killed = 0
    for client in await admin.client_list():
        if client.get("name") == client_name:
            killed += await admin.client_kill_filter(_id=client["id"])
    return killed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault: restarts Redis through scripts/services.py")


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
