#!/usr/bin/env python3
"""Start, stop and restart the real brokers AMB's tests run against.

Usage::

    python scripts/services.py up [redis] [rabbitmq] [kafka]   # no names = all three
    python scripts/services.py down [names] [--wipe]
    python scripts/services.py status [names]
    python scripts/services.py restart NAME                    # same port, same data
    python scripts/services.py kill NAME                       # SIGKILL: a crash; `up` starts it again
    python scripts/services.py restart --kill NAME             # a crash, then the same start
    python scripts/services.py env                             # AMB_*_URL=... lines

``up`` returns only once every broker accepts clients: Redis answers PING, RabbitMQ
completes a real AMQP 0-9-1 login (Start/Tune/Open) with the URL's credentials, Kafka
answers ApiVersions and lists itself in a Metadata response (i.e. it is unfenced).

The brokers, their URL variables (``AMB_REDIS_URL``, ``AMB_RABBITMQ_URL``, ``AMB_KAFKA_URL``)
and their default URLs are those of ``brokers.json`` at the repository's root.

Modes:

* native (default): Debian's ``redis-server`` and ``rabbitmq-server`` packages and an Apache
  Kafka broker assembled from Maven Central by ``scripts/kafka/pom.xml`` (configured by the
  files beside it), each started in the background with its data, logs and pid file under
  ``.services/<name>/`` at the repo root.  When run as root, Redis and RabbitMQ run as the
  ``redis`` / ``rabbitmq`` users the packages create.
* docker (``--docker`` or ``AMB_SERVICES_MODE=docker``): ``compose.yaml`` at the repo root.
  ``AMB_SERVICES_MODE=auto`` picks docker only when the native programs are missing and a
  Docker engine answers.

``AMB_<NAME>_RESTART_CMD`` (e.g. ``AMB_REDIS_RESTART_CMD="docker restart redis"``) makes
``restart NAME`` run that shell command instead, then wait until the broker is ready: for
brokers this launcher does not manage (CI service containers, a remote host, ...).
``AMB_<NAME>_KILL_CMD``, ``AMB_<NAME>_STOP_CMD`` and ``AMB_<NAME>_START_CMD`` do the same for
``kill NAME``, ``down NAME`` and ``up NAME`` (``up`` then waits until the broker is ready).

Importable: ``up(names)``, ``down(names)``, ``restart(name)``, ``kill(name)``,
``status(names)``, ``env()``; failures raise :class:`ServiceError`.  Stdlib only.  The code is
the ``launcher`` package beside this file, one module per job.
"""

from __future__ import annotations

import sys

# The package's public names, for code that imports this file as it did before the split.
from launcher import *  # noqa: F403
from launcher import __all__ as __all__
from launcher import main

if __name__ == "__main__":
    sys.exit(main())
