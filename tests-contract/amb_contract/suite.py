"""What the contract suite runs against: the broker's URL (``AMB_CONTRACT_URL``, default the
in-memory broker), the bound on every wait (``AMB_CONTRACT_WAIT``), the broker's `BrokerConfig`
(``AMB_CONTRACT_CONFIG=package.module:NAME`` for a third-party adapter, else the one
broker_config.py keeps for the URL's scheme) and its capabilities."""

from __future__ import annotations

import importlib
import os
import re
from functools import cache
from pathlib import Path

from amb_contract.broker_config import BrokerConfig, config_for
from amb_core import Capabilities, MessageBus

URL = os.environ.get("AMB_CONTRACT_URL", "memory://contract")
SCHEME = URL.partition("://")[0]
#: A bound on every wait: generous, because it is a safety net, not a timing assertion.
WAIT = float(os.environ.get("AMB_CONTRACT_WAIT", "30"))
#: The repository's root when the suite runs from a checkout (its README and launcher are there).
ROOT = Path(__file__).resolve().parents[2]


def _config() -> BrokerConfig:
    named = os.environ.get("AMB_CONTRACT_CONFIG")
    if not named:
        return config_for(SCHEME)
    module, _, attribute = named.partition(":")
    config = getattr(importlib.import_module(module), attribute)
    if not isinstance(config, BrokerConfig):
        raise TypeError(f"AMB_CONTRACT_CONFIG={named} is not an amb_contract.broker_config.BrokerConfig")
    return config


CONFIG = _config()


@cache
def capabilities() -> Capabilities:
    """What the adapter for `URL` declares (read from an unconnected bus)."""
    return MessageBus.from_url(URL).capabilities


def applies(markers: set[str], capabilities: Capabilities, config: BrokerConfig) -> bool:
    """Whether a test marked ``markers`` applies to a broker: ``fault`` tests (they restart,
    stop or kill it) where its adapter declares ``survives_restart``, ``network`` tests (they
    start other peers at its address) where its `BrokerConfig` has an address."""
    if "fault" in markers and not capabilities.survives_restart:
        return False
    return not ("network" in markers and not config.has_address)


def adapter_module() -> str:
    """The top-level package of the adapter for `URL` (``amb_redis``, ...)."""
    return type(MessageBus.from_url(URL).adapter).__module__.partition(".")[0]


def readme_example() -> str:
    """The first Python example of the top-level README, as written."""
    readme = ROOT / "README.md"
    if not readme.exists():
        readme = Path(__file__).with_name("README_EXAMPLE.md")  # installed from a wheel
    code: str = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)[0]
    return code
