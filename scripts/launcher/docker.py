"""The Docker mode (``--docker`` or ``AMB_SERVICES_MODE=docker``): the brokers of ``compose.yaml``
on the ports of their URLs; and which mode a run uses."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable

from launcher import native
from launcher.endpoints import NAMES, endpoint
from launcher.errors import ServiceError
from launcher.paths import COMPOSE_FILE


def mode(names: Iterable[str], docker: bool | None = None) -> str:
    """``"docker"`` or ``"native"``: ``docker`` if given, else ``AMB_SERVICES_MODE`` (``auto``
    picks docker only when the native programs are missing and a Docker engine answers)."""
    if docker is True:
        return "docker"
    if docker is False:
        return "native"
    chosen = os.environ.get("AMB_SERVICES_MODE", "native").strip().lower() or "native"
    if chosen == "auto":
        if native.available(names) or not _engine_answers():
            return "native"
        return "docker"
    if chosen not in ("native", "docker"):
        raise ServiceError(f"AMB_SERVICES_MODE={chosen!r}: expected native, docker or auto")
    return chosen


def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run ``docker compose`` on compose.yaml, each broker published on its URL's port."""
    environ = dict(os.environ)
    for name in NAMES:
        environ.setdefault(f"AMB_{name.upper()}_PORT", str(endpoint(name).port))
    cmd = [*_compose_cli(), "-f", str(COMPOSE_FILE), "-p", "amb", *args]
    proc = subprocess.run(cmd, env=environ, check=False)
    if check and proc.returncode != 0:
        raise ServiceError(f"`{shlex.join(cmd)}` failed with exit code {proc.returncode}")
    return proc


def _compose_cli() -> list[str]:
    """``docker compose`` (v2 plugin), else the standalone ``docker-compose``."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        probe = subprocess.run(
            ["docker", "compose", "version"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=15,
            check=False,
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise ServiceError("docker mode needs `docker compose` (or `docker-compose`); not found")


def _engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        proc = subprocess.run(
            ["docker", "info"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0
