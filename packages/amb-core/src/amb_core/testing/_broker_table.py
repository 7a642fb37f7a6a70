"""A table of brokers to test against, as this repository keeps it in ``brokers.json``: each
broker's name, the environment variable naming a running one, and the URL used otherwise."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BrokerEntry:
    name: str
    url_variable: str
    default_url: str
    distribution: str
    module: str

    @property
    def url(self) -> str:
        """The URL in ``url_variable`` if set, else ``default_url``."""
        return os.environ.get(self.url_variable, self.default_url)


def load_broker_table(path: Path) -> dict[str, BrokerEntry]:
    """The brokers of a ``brokers.json`` file, by name."""
    table = json.loads(path.read_text())
    return {entry["name"]: BrokerEntry(**entry) for entry in table["brokers"]}
