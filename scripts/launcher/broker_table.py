"""The brokers this repository tests against, read from ``brokers.json`` at the repository's root.

That file is the one table (the launcher, nox, the benchmarks and the tests read it): adding a
broker there is what makes it known; nothing else lists names, URL variables or default URLs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from launcher.paths import BROKER_TABLE


@dataclass(frozen=True)
class Broker:
    """One row of the table."""

    name: str
    #: The environment variable that points at a running broker (``AMB_REDIS_URL``).
    url_variable: str
    #: Where the launcher starts the broker when ``url_variable`` is not set.
    default_url: str
    #: The distribution of its adapter (``amb-redis``) and the module it installs (``amb_redis``).
    distribution: str
    module: str


def read_broker_table(path: Path = BROKER_TABLE) -> tuple[Broker, ...]:
    """The table's rows in file order; ``ValueError`` naming the file if one is malformed.
    Keys a row has beyond :class:`Broker`'s fields are ignored, so the table can grow."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["brokers"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read the broker table ({exc})") from exc
    if not isinstance(rows, list):
        raise ValueError(f'{path}: "brokers" must be a list')
    names = [field.name for field in fields(Broker)]
    brokers = []
    for number, row in enumerate(rows):
        if not isinstance(row, dict) or not all(
            isinstance(row.get(name), str) and row[name] for name in names
        ):
            raise ValueError(
                f"{path}: broker #{number} needs a non-empty string for each of {', '.join(names)}"
            )
        brokers.append(Broker(**{name: row[name] for name in names}))
    if len({broker.name for broker in brokers}) != len(brokers):
        raise ValueError(f"{path}: a broker name appears twice")
    return tuple(brokers)


#: Every broker by name, in the table's order.
BROKERS: dict[str, Broker] = {broker.name: broker for broker in read_broker_table()}
