"""AMB's pytest plugin: fixtures for tests that run buses on a broker, registered through the
``pytest11`` entry point ``amb`` (installing amb-core enables it; ``-p no:amb`` disables it).

Every fixture is prefixed ``amb_`` so that none clashes with a project's own, and a test that
uses one runs on asyncio only (anyio's ``anyio_backend``); other tests are left alone. A test
suite points the fixtures at its broker by overriding ``amb_url`` (and, for tests that restart
the broker, ``amb_broker_control``) in its conftest.py:

```python
@pytest.fixture
def amb_url() -> str:
    return "redis://127.0.0.1:6379/0"
```

This is the only module of amb_core that imports pytest; importing amb_core does not load it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from amb_core import MessageBus
from amb_core.testing import BrokerControl, BrokerProcess, BusFactory, FaultyProxy, Recorder


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that uses an ``amb_`` fixture runs on asyncio only, AMB's event loop (anyio's own
    ``anyio_backend`` runs a test on every installed backend, trio too); other tests are left
    as they are. This runs before anyio's parametrization (``tryfirst``), which then steps aside."""
    names = metafunc.fixturenames
    if "anyio_backend" in names and any(name.startswith("amb_") for name in names):
        metafunc.parametrize("anyio_backend", ["asyncio"])


@pytest.fixture
def amb_url() -> str:
    """The broker the ``amb_`` fixtures connect to: the in-memory broker unless overridden."""
    return "memory://amb-test"


@pytest.fixture
def amb_wait() -> float:
    """Seconds a wait may take before the test fails (``AMB_TEST_WAIT``, default 30): a safety
    net for slow machines, not a timing assertion."""
    return float(os.environ.get("AMB_TEST_WAIT", "30"))


@pytest.fixture
def amb_topic() -> str:
    """A topic no other test (or earlier run on the same broker) has used."""
    return f"amb-test.{uuid.uuid4().hex[:16]}"


@pytest.fixture
def amb_bus_options() -> dict[str, Any]:
    """Options every bus of `amb_make_bus` gets, before the test's own (override to add some)."""
    return {}


@pytest.fixture
async def amb_make_bus(amb_url: str, amb_bus_options: dict[str, Any]) -> AsyncIterator[BusFactory]:
    """``await amb_make_bus(**options)``: a bus on `amb_url` (``url=`` for another), connected,
    and disconnected at the end of the test."""
    buses: list[MessageBus] = []

    async def make(*, url: str | None = None, **options: Any) -> MessageBus:
        bus = MessageBus.from_url(url or amb_url, **{**amb_bus_options, **options})
        await bus.connect()
        buses.append(bus)
        return bus

    yield make
    for bus in reversed(buses):
        await bus.disconnect()


@pytest.fixture
async def amb_bus(amb_make_bus: BusFactory) -> MessageBus:
    """One connected bus on `amb_url`."""
    return await amb_make_bus()


@pytest.fixture
def amb_received(amb_wait: float) -> Callable[[], Recorder]:
    """``amb_received()``: a new `Recorder` whose waits are bounded by `amb_wait`."""

    def make() -> Recorder:
        return Recorder(timeout=amb_wait)

    return make


@pytest.fixture
async def amb_proxy(amb_url: str) -> AsyncIterator[FaultyProxy]:
    """A `FaultyProxy` in front of `amb_url`'s host and port, closed after the test: only the
    buses given ``amb_proxy.url(amb_url)`` go through it, so nobody else on a shared broker is
    disturbed."""
    address = urlsplit(amb_url)
    if address.hostname is None or address.port is None:
        raise ValueError(f"amb_proxy needs a host and port in amb_url, not {address.scheme}://...")
    proxy = FaultyProxy(address.hostname, address.port)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
def amb_broker_control() -> BrokerControl:
    """How to restart, stop, start and kill the broker: ``AMB_<ACTION>_CMD`` unless overridden
    (with a launcher, `BrokerControl.launcher_script`)."""
    return BrokerControl()


@pytest.fixture
async def amb_broker(amb_broker_control: BrokerControl) -> AsyncIterator[BrokerProcess]:
    """The broker's process, to restart, stop, start or kill; whatever the test did, the broker
    is up again afterwards."""
    process = BrokerProcess(amb_broker_control)
    yield process
    if process.down:
        await process.start()
