"""Fixtures for amb-kafka's tests, which run against a real Kafka (``AMB_KAFKA_URL``)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from amb_core import MessageBus
from amb_core.testing import Recorder
from amb_kafka._options import bootstrap_servers

URL = os.environ.get("AMB_KAFKA_URL", "kafka://127.0.0.1:9092")
ROOT = Path(__file__).resolve().parents[3]
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


def _launcher(action: str) -> None:
    """``scripts/services.py <action> kafka``; ``AMB_<ACTION>_CMD`` (``AMB_STOP_CMD``,
    ``AMB_START_CMD``) overrides it for a Kafka the launcher does not run, as in tests-contract."""
    command = os.environ.get(f"AMB_{action.upper()}_CMD")
    verb = {"stop": "down", "start": "up"}[action]
    args = (
        shlex.split(command)
        if command
        else [sys.executable, str(ROOT / "scripts" / "services.py"), verb, "kafka"]
    )
    subprocess.run(args, check=True, timeout=300, stdout=subprocess.DEVNULL)


class KafkaProcess:
    """The broker as a process a test stops and starts again."""

    def __init__(self) -> None:
        self.down = False

    async def stop(self) -> None:
        self.down = True
        await anyio.to_thread.run_sync(_launcher, "stop")

    async def start(self) -> None:
        await anyio.to_thread.run_sync(_launcher, "start")
        self.down = False


@pytest.fixture
async def kafka_process() -> AsyncIterator[KafkaProcess]:
    """Whatever the test did, Kafka is up afterwards."""
    process = KafkaProcess()
    yield process
    if process.down:
        await process.start()
