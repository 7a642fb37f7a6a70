"""Fixtures for amb-kafka's tests, which run against a real Kafka (``AMB_KAFKA_URL``): amb_core's
pytest plugin (``amb_make_bus``, ``amb_topic``, ``amb_broker``...) pointed at it, and a Kafka
admin client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from amb_core.testing import BrokerControl, load_broker_table
from amb_kafka._options import bootstrap_servers

ROOT = Path(__file__).resolve().parents[3]
URL = load_broker_table(ROOT / "brokers.json")["kafka"].url
BOOTSTRAP = ",".join(bootstrap_servers(URL))
WAIT = 30.0


@pytest.fixture
def amb_url() -> str:
    return URL


@pytest.fixture
def amb_broker_control() -> BrokerControl:
    return BrokerControl.launcher_script(ROOT / "scripts" / "services.py", "kafka")


@pytest.fixture
async def admin() -> AsyncIterator[Any]:
    client = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await client.start()
    yield client
    await client.close()
