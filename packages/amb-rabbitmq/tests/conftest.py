"""Fixtures for amb-rabbitmq's tests, which run against a real RabbitMQ (``AMB_RABBITMQ_URL``).

Every test gets its own exchange prefix, so its exchanges, queues and dead-letter queue are its
own on a broker shared with other tests and runs; they are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
import anyio
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from amb_core import MessageBus
from amb_core.testing import FaultyProxy, Recorder
from amb_rabbitmq import RabbitMQBroker

URL = os.environ.get("AMB_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
#: A bound on every wait: a safety net, not a timing assertion.
WAIT = float(os.environ.get("AMB_TEST_WAIT", "30"))
ROOT = Path(__file__).resolve().parents[3]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault: restarts RabbitMQ (scripts/services.py restart rabbitmq)")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def url() -> str:
    return URL


@pytest.fixture
def topic() -> str:
    """A topic no other test or run has used."""
    return f"rmq-test.{uuid.uuid4().hex[:16]}"


@pytest.fixture
def prefix() -> str:
    """An exchange name (and queue prefix) of this test's own."""
    return f"ambtest-{uuid.uuid4().hex[:12]}"


class Admin:
    """A plain aio-pika connection, to look at and tamper with what the adapter declares."""

    def __init__(self, connection: AbstractConnection, prefix: str) -> None:
        self.connection = connection
        self.prefix = prefix
        self.queues: list[str] = [f"{prefix}.dlq"]

    def group_queue(self, group: str, pattern: str) -> str:
        """The durable queue of ``group`` on ``pattern`` (deleted at the end of the test)."""
        name = f"{self.prefix}.group.{group}.{pattern.replace('*', '@')}"
        self.queues.append(name)
        return name

    async def channel(self) -> AbstractChannel:
        try:
            # Older aio-pika waits forever for a channel on a connection the broker closed.
            return await asyncio.wait_for(self.connection.channel(), 5)
        except (RuntimeError, ConnectionError, asyncio.TimeoutError):  # a fault test restarted the broker
            self.connection = await aio_pika.connect(URL)
            return await self.connection.channel()

    async def ready(self, queue: str) -> int | None:
        """Messages ready in ``queue``, or None if there is no such queue."""
        channel = await self.channel()  # a refused passive declare closes its channel
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return None
        finally:
            if not channel.is_closed:
                await channel.close()
        result = declared.declaration_result
        return result.message_count

    async def exclusive_exists(self, queue: str) -> bool:
        """Whether another connection's exclusive ``queue`` exists (it cannot be inspected)."""
        channel = await self.channel()
        try:
            await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelLockedResource:
            return True
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            if not channel.is_closed:
                await channel.close()
        raise AssertionError(f"{queue} is not exclusive to another connection")


@pytest.fixture
async def admin(prefix: str) -> AsyncIterator[Admin]:
    """An `Admin`; at the end it deletes the exchanges and dead-letter queue of ``prefix``."""
    connection = await aio_pika.connect(URL)
    admin = Admin(connection, prefix)
    yield admin
    cleanup = await admin.channel()
    for queue in admin.queues:
        await cleanup.queue_delete(queue)
    for exchange in (prefix, f"{prefix}.reserved", f"{prefix}.dlx"):
        await cleanup.exchange_delete(exchange)
    with contextlib.suppress(RuntimeError, ConnectionError):
        await admin.connection.close()


BusFactory = Callable[..., Awaitable[MessageBus]]


@pytest.fixture
async def make_bus(prefix: str, admin: Admin) -> AsyncIterator[BusFactory]:
    """Connected buses on this test's exchange, disconnected at the end of the test.
    ``queue_size`` and ``drain_timeout`` go to the bus, everything else to the adapter."""
    buses: list[MessageBus] = []

    async def make(*, queue_size: int = 1024, drain_timeout: float = 5.0, **options: Any) -> MessageBus:
        options.setdefault("exchange", prefix)
        bus = MessageBus(RabbitMQBroker(URL, **options), queue_size=queue_size, drain_timeout=drain_timeout)
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


@pytest.fixture
def received() -> Callable[[], Received]:
    return Received


def restart_rabbitmq() -> None:
    """Restart the broker (keeping its data) and return once it accepts clients again."""
    command = os.environ.get("AMB_RABBITMQ_RESTART_CMD")
    args = (
        ["sh", "-c", command]
        if command
        else [sys.executable, str(ROOT / "scripts" / "services.py"), "restart", "rabbitmq"]
    )
    subprocess.run(args, check=True, timeout=300)


@pytest.fixture
def broker_restart() -> Callable[[], Awaitable[None]]:
    async def restart() -> None:
        await anyio.to_thread.run_sync(restart_rabbitmq)

    return restart


@pytest.fixture
async def proxy() -> AsyncIterator[FaultyProxy]:
    """A faulty peer in front of the test broker, stopped and started by the test (closed at
    the end): only the test's buses go through it."""
    address = urlsplit(URL)
    running = FaultyProxy(address.hostname or "127.0.0.1", address.port or 5672)
    await running.start()
    yield running
    await running.close()
