"""Fixtures for amb-rabbitmq's tests, which run against a real RabbitMQ (``AMB_RABBITMQ_URL``):
amb_core's pytest plugin (``amb_make_bus``, ``amb_topic``, ``amb_proxy``, ``amb_broker``...)
pointed at it, and what only these tests need.

Every test gets its own exchange prefix, so its exchanges, queues and dead-letter queue are its
own on a broker shared with other tests and runs; they are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from amb_core.testing import BrokerControl, load_broker_table

ROOT = Path(__file__).resolve().parents[3]
URL = load_broker_table(ROOT / "brokers.json")["rabbitmq"].url
#: A bound on every wait: a safety net, not a timing assertion.
WAIT = float(os.environ.get("AMB_TEST_WAIT", "30"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault: restarts RabbitMQ (scripts/services.py restart rabbitmq)")


@pytest.fixture
def amb_url() -> str:
    return URL


@pytest.fixture
def amb_broker_control() -> BrokerControl:
    return BrokerControl.launcher_script(ROOT / "scripts" / "services.py", "rabbitmq")


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


@pytest.fixture
def amb_bus_options(prefix: str, admin: Admin) -> dict[str, Any]:
    """Buses on this test's exchange (disconnected before `admin` deletes it)."""
    return {"exchange": prefix}
