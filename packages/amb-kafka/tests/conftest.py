"""Fixtures for amb-kafka's tests, which run against a real Kafka (``AMB_KAFKA_URL``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from amb_core import MessageBus
from amb_core.testing import Recorder
from amb_kafka.config import bootstrap_servers

URL = os.environ.get("AMB_KAFKA_URL", "kafka://127.0.0.1:9092")
BOOTSTRAP = ",".join(bootstrap_servers(URL))
WAIT = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def topic() -> str:
    return f"kafkatest.{uuid.uuid4().hex[:16]}"


BusFactory = Callable[..., Awaitable[MessageBus]]


@pytest.fixture
async def make_bus() -> AsyncIterator[BusFactory]:
    buses: list[MessageBus] = []

    async def make(**options: Any) -> MessageBus:
        bus_options = {key: options.pop(key) for key in ("queue_size", "drain_timeout") if key in options}
        bus = MessageBus.from_url(URL, **bus_options, **options)
        await bus.connect()
        buses.append(bus)
        return bus

    yield make
    for bus in reversed(buses):
        await bus.disconnect()


@pytest.fixture
async def admin() -> AsyncIterator[Any]:
    client = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await client.start()
    yield client
    await client.close()


class Received(Recorder):
    """`amb_core.testing.Recorder`, bounded by `WAIT`."""

    def __init__(self) -> None:
        super().__init__(timeout=WAIT)
