"""The one way tests restart, stop, start and kill the broker under test: a command per action,
``AMB_<ACTION>_CMD`` from the environment (a broker run by systemd, Docker, a cloud service...)
or else a launcher's ``<verb> <NAME>`` (this repository's ``scripts/services.py``, which itself
honours ``AMB_<NAME>_RESTART_CMD`` and the like)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread

#: The launcher's verb for each action.
_VERBS = {"restart": "restart", "stop": "down", "start": "up", "kill": "kill"}


class BrokerControl:
    """Runs the command that restarts, stops, starts or kills (SIGKILL: a crash) the broker
    under test and returns once it has done so; ``restart`` and ``start`` return once the
    broker accepts clients again.

    ``AMB_RESTART_CMD``, ``AMB_STOP_CMD``, ``AMB_START_CMD`` and ``AMB_KILL_CMD`` (shell words)
    take precedence; without them, ``launcher`` (a command taking ``<verb> <NAME>``) and
    ``name`` say how. With neither, the action fails with an error that says what to set.
    """

    def __init__(self, launcher: Sequence[str] = (), name: str = "") -> None:
        self.launcher = tuple(launcher)
        self.name = name

    @classmethod
    def launcher_script(cls, script: Path, name: str) -> BrokerControl:
        """Control through a Python launcher script, run by this interpreter."""
        return cls((sys.executable, str(script)), name)

    def command(self, action: str) -> list[str]:
        """The command that performs ``action`` (``restart``, ``stop``, ``start``, ``kill``)."""
        variable = f"AMB_{action.upper()}_CMD"
        if override := os.environ.get(variable):
            return shlex.split(override)
        if not self.launcher:
            raise RuntimeError(f"no way to {action} the broker under test: set {variable}")
        return [*self.launcher, _VERBS[action], self.name]

    def run(self, action: str) -> None:
        """Perform ``action`` and return once it is done (a failing command raises)."""
        subprocess.run(self.command(action), check=True, timeout=300)


class BrokerProcess:
    """The broker under test as a process a test restarts, stops, starts and kills, through a
    `BrokerControl`; ``down`` says whether the test left it stopped (the ``amb_broker``
    fixture starts it again)."""

    def __init__(self, control: BrokerControl) -> None:
        self.control = control
        self.down = False

    async def restart(self) -> None:
        """Restart the broker (keeping its data); returns once it accepts clients again."""
        await anyio.to_thread.run_sync(self.control.run, "restart")

    async def stop(self) -> None:
        self.down = True
        await anyio.to_thread.run_sync(self.control.run, "stop")

    async def kill(self) -> None:
        self.down = True
        await anyio.to_thread.run_sync(self.control.run, "kill")

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.control.run, "start")
        self.down = False
