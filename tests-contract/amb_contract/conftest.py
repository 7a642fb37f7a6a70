"""The contract suite's configuration: the fixtures of amb_core's pytest plugin (``amb_url``,
``amb_make_bus``, ``amb_topic``, ``amb_received``, ``amb_broker``...) pointed at the broker under
test (amb_contract.suite), and which tests apply to it.

The adapter's declared capabilities decide: tests marked ``fault`` (they restart, stop or kill
the broker) run where ``survives_restart`` is declared, those marked ``network`` (they start
other peers at the broker's address) where the broker's `BrokerConfig` has an address. The
others are deselected, not skipped: the in-memory broker lives in the test's process.
"""

from __future__ import annotations

import pytest

from amb_contract.suite import CONFIG, ROOT, URL, WAIT, adapter_module, applies, capabilities
from amb_core.testing import BrokerControl, load_broker_table

_MARKERS = {
    "fault": "restarts, stops or kills the broker under test (the launcher, or AMB_*_CMD)",
    "network": "needs a broker at an address (other peers are started beside it)",
    "chaos": "hostile input and failures (docs/semantics.md, When things go wrong)",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, about in _MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {about}")


def pytest_report_header() -> str:
    scheme, _, rest = URL.partition("://")
    return f"amb contract suite against {scheme}://{rest.rpartition('@')[2]}"  # no credentials


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        markers = {marker.name for marker in item.iter_markers()}
        (selected if applies(markers, capabilities(), CONFIG) else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture
def amb_url() -> str:
    return URL


@pytest.fixture
def amb_wait() -> float:
    return WAIT


@pytest.fixture
def amb_broker_control() -> BrokerControl:
    """``AMB_<ACTION>_CMD`` if set; in a checkout, the launcher (scripts/services.py) for the
    broker of brokers.json whose module is the adapter's."""
    table, launcher = ROOT / "brokers.json", ROOT / "scripts" / "services.py"
    if table.exists() and launcher.exists():
        module = adapter_module()
        for broker in load_broker_table(table).values():
            if broker.module == module:
                return BrokerControl.launcher_script(launcher, broker.name)
    return BrokerControl()
