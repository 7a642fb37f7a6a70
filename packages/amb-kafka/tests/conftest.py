"""Fixtures for amb-kafka's tests, which run against a real Kafka (``AMB_KAFKA_URL``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from amb_core import Message, MessageBus
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


class Received:
    """A handler that records messages and lets a test await a count of them."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = anyio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, count: int) -> list[Message]:
        with anyio.fail_after(WAIT):
            while len(self.messages) < count:
                self._changed = anyio.Event()
                await self._changed.wait()
        return self.messages[:count]

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [message.payload for message in self.messages]
