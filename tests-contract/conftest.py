"""Fixtures of the contract suite: a URL, buses on it, unique topics and ways to await deliveries.

The suite runs against the broker named by ``AMB_CONTRACT_URL`` (default: the in-memory broker).
It imports only the public API, so a third-party adapter runs it by naming a URL whose scheme its
``amb.adapters`` entry point registers.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from amb_core import MessageBus
from amb_core.testing import Recorder

URL = os.environ.get("AMB_CONTRACT_URL", "memory://contract")
SCHEME = URL.partition("://")[0]
#: A bound on every wait: generous, because it is a safety net, not a timing assertion.
WAIT = float(os.environ.get("AMB_CONTRACT_WAIT", "30"))
ROOT = Path(__file__).resolve().parent.parent
_SERVICES = {
    "redis": "redis",
    "rediss": "redis",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "kafka": "kafka",
}


def pytest_report_header() -> str:
    return f"amb contract suite against {URL}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fault tests need a broker process to restart, network tests a broker address: both are
    deselected (not skipped) for the in-memory broker, which has neither."""
    selected, deselected = [], []
    for item in items:
        if (item.get_closest_marker("fault") or item.get_closest_marker("network")) and SCHEME == "memory":
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = WAIT) -> None:
    """Return once ``check()`` is true, looking again every 0.1 s, for state that no event
    announces (what a broker reports about a group); AssertionError after ``within`` s."""
    deadline = anyio.current_time() + within
    while not await check():
        if anyio.current_time() > deadline:
            raise AssertionError(f"still not {what} after {within} s")
        await anyio.sleep(0.1)


def readme_example() -> str:
    """The first Python example of the top-level README, as written."""
    code: str = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[0]
    return code


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def topic() -> str:
    """A topic no other test or earlier run has used."""
    return f"contract.{uuid.uuid4().hex[:16]}"


BusFactory = Callable[..., Awaitable[MessageBus]]


@pytest.fixture
async def make_bus() -> AsyncIterator[BusFactory]:
    """Connected buses on the broker under test, disconnected at the end of the test."""
    buses: list[MessageBus] = []

    async def make(**options: Any) -> MessageBus:
        bus = MessageBus.from_url(URL, **options)
        await bus.connect()
        buses.append(bus)
        return bus

    yield make
    for bus in reversed(buses):
        await bus.disconnect()


@pytest.fixture
async def bus(make_bus: BusFactory) -> MessageBus:
    return await make_bus()


class Received(Recorder):
    """`amb_core.testing.Recorder`, bounded by the suite's `WAIT`."""

    def __init__(self) -> None:
        super().__init__(timeout=WAIT)


@pytest.fixture
def received() -> Callable[[], Received]:
    return Received


def _launcher(action: str) -> None:
    """Run ``scripts/services.py <action> <broker>`` on the broker under test and wait for it.

    ``AMB_<ACTION>_CMD`` (``AMB_RESTART_CMD``, ``AMB_STOP_CMD``, ``AMB_START_CMD``,
    ``AMB_KILL_CMD``) overrides how, for brokers the launcher does not run; ``start`` and
    ``restart`` must return once the broker accepts clients again.
    """
    command = os.environ.get(f"AMB_{action.upper()}_CMD")
    if command:
        args = shlex.split(command)
    else:
        verb = {"stop": "down", "start": "up"}.get(action, action)
        args = [sys.executable, str(ROOT / "scripts" / "services.py"), verb, _SERVICES[SCHEME]]
    subprocess.run(args, check=True, timeout=300)


def restart_broker() -> None:
    """Restart the broker under test and wait until it accepts clients again."""
    _launcher("restart")


@pytest.fixture
def broker_restart() -> Iterator[Callable[[], Awaitable[None]]]:
    async def restart() -> None:
        await anyio.to_thread.run_sync(restart_broker)

    yield restart


class BrokerProcess:
    """The broker under test as a process the test stops, starts and kills (with SIGKILL, a
    crash), through the launcher."""

    def __init__(self) -> None:
        self.down = False

    async def stop(self) -> None:
        self.down = True
        await anyio.to_thread.run_sync(_launcher, "stop")

    async def kill(self) -> None:
        self.down = True
        await anyio.to_thread.run_sync(_launcher, "kill")

    async def start(self) -> None:
        await anyio.to_thread.run_sync(_launcher, "start")
        self.down = False


@pytest.fixture
async def broker_process() -> AsyncIterator[BrokerProcess]:
    """Control of the broker's process; whatever the test did, the broker is up afterwards."""
    process = BrokerProcess()
    yield process
    if process.down:
        await process.start()
