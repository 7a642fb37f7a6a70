"""The broker launcher behind ``scripts/services.py``: one module per job.

- :mod:`launcher.broker_table`: the brokers, read from ``brokers.json`` (the repository's one table);
- :mod:`launcher.endpoints`: where each broker is expected (its ``AMB_<NAME>_URL`` or default URL);
- :mod:`launcher.probes`: whether a broker accepts clients (a real protocol exchange, stdlib only);
- :mod:`launcher.processes`: pid files, starting, stopping and killing broker processes;
- :mod:`launcher.native`: how Redis, RabbitMQ and Kafka are started on this machine;
- :mod:`launcher.docker`: the Docker mode (``compose.yaml``), and which mode to use;
- :mod:`launcher.commands`: up, down, restart, kill, status, env: the importable API;
- :mod:`launcher.cli`: the command line.

Stdlib only: it runs before any virtualenv exists.
"""

from __future__ import annotations

from launcher.cli import main
from launcher.commands import down, kill, restart, status, up
from launcher.endpoints import NAMES, Endpoint, endpoint, env
from launcher.errors import ServiceError

__all__ = [
    "NAMES",
    "Endpoint",
    "ServiceError",
    "down",
    "endpoint",
    "env",
    "kill",
    "main",
    "restart",
    "status",
    "up",
]
