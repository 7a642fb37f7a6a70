"""Which tests apply to a broker follows what its adapter declares and its `BrokerConfig`, never
its URL's scheme (conftest.py deselects the others)."""

from __future__ import annotations

from amb_contract.broker_config import BrokerConfig
from amb_contract.suite import CONFIG, applies, capabilities
from amb_core import Capabilities

RESTARTS, STAYS_DOWN = Capabilities(survives_restart=True), Capabilities(survives_restart=False)


def test_fault_tests_apply_where_the_adapter_declares_survives_restart() -> None:
    # The same scheme either way: only the declaration decides.
    config = BrokerConfig("memory")
    assert applies({"fault", "chaos"}, RESTARTS, config)
    assert not applies({"fault", "chaos"}, STAYS_DOWN, config)
    assert applies({"chaos"}, STAYS_DOWN, config)


def test_network_tests_apply_where_the_broker_has_an_address() -> None:
    assert applies({"network"}, STAYS_DOWN, BrokerConfig("redis"))
    assert not applies({"network"}, RESTARTS, BrokerConfig("redis", has_address=False))
    assert not applies({"network", "fault"}, RESTARTS, BrokerConfig("redis", has_address=False))


def test_the_broker_under_test_runs_what_it_declares() -> None:
    assert applies({"fault"}, capabilities(), CONFIG) is capabilities().survives_restart
    assert applies({"network"}, capabilities(), CONFIG) is CONFIG.has_address
