"""What each command does, in whichever mode applies: the importable API (``up``, ``down``,
``restart``, ``kill``, ``status``; ``env`` is in endpoints). Each blocks until done and raises
:class:`~launcher.errors.ServiceError` on failure.

``AMB_<NAME>_RESTART_CMD`` (e.g. ``AMB_REDIS_RESTART_CMD="docker restart redis"``) makes
``restart NAME`` run that shell command instead, then wait until the broker is ready: for
brokers this launcher does not manage. ``AMB_<NAME>_KILL_CMD``, ``AMB_<NAME>_STOP_CMD`` and
``AMB_<NAME>_START_CMD`` do the same for ``kill``, ``down`` and ``up``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from launcher import docker as docker_mode
from launcher import native, processes
from launcher.endpoints import NAMES, broker, endpoint
from launcher.errors import ServiceError
from launcher.output import say
from launcher.probes import port_open, ready


def up(names: Iterable[str] | str | None = None, *, docker: bool | None = None) -> None:
    """Start the named brokers (default: all) unless already up; block until all are ready."""
    chosen = _names(names)
    if _override("START", chosen):
        for name in chosen:
            native.wait_ready(name, None, time.monotonic())
            say(f"{name:9} ready on {endpoint(name).address} (AMB_{name.upper()}_START_CMD)")
        return
    if docker_mode.mode(chosen, docker) == "docker":
        docker_mode.compose("up", "-d", "--wait", *chosen)
        for name in chosen:
            native.wait_ready(name, None, time.monotonic())
            say(f"{name:9} ready on {endpoint(name).address} (docker compose)")
        return
    with processes.state_lock():
        _run_parallel(chosen, _native_up_one)


def down(
    names: Iterable[str] | str | None = None,
    *,
    wipe: bool = False,
    docker: bool | None = None,
) -> None:
    """Stop the named brokers (default: all) that this launcher started; ``wipe`` drops data."""
    chosen = _names(names)
    if not wipe and _override("STOP", chosen):
        return
    if docker_mode.mode(chosen, docker) == "docker":
        if set(chosen) == set(NAMES):
            docker_mode.compose("down", *(["-v"] if wipe else []))
        else:
            docker_mode.compose("rm", "-s", "-f", *(["-v"] if wipe else []), *chosen)
        return
    with processes.state_lock():
        _run_parallel(chosen, lambda name: _native_down_one(name, wipe))


def restart(name: str, *, docker: bool | None = None) -> None:
    """Stop and start broker ``name`` on the same port keeping its data; block until ready."""
    broker(name)
    t0 = time.monotonic()
    override = os.environ.get(f"AMB_{name.upper()}_RESTART_CMD")
    if override:
        subprocess.run(override, shell=True, check=True)
        native.wait_ready(name, None, t0)
    elif docker_mode.mode([name], docker) == "docker":
        docker_mode.compose("restart", name)
        native.wait_ready(name, None, t0)
    else:
        with processes.state_lock():
            pid = processes.managed_pid(name)
            if pid is None and ready(name):
                raise ServiceError(
                    f"{name}: {endpoint(name).address} is served by something this launcher did "
                    f"not start; set AMB_{name.upper()}_RESTART_CMD to restart it"
                )
            if pid is not None:
                processes.stop(name, pid)
            _native_up_one(name)
    say(f"{name:9} restarted, ready on {endpoint(name).address} ({time.monotonic() - t0:.1f}s)")


def kill(name: str, *, docker: bool | None = None) -> None:
    """Kill broker ``name`` with SIGKILL, as a crash would: no shutdown, no final write. It
    stays down until `up` (or `restart`) starts it again, with whatever it had on disk."""
    broker(name)
    override = os.environ.get(f"AMB_{name.upper()}_KILL_CMD")
    if override:
        subprocess.run(override, shell=True, check=True)
    elif docker_mode.mode([name], docker) == "docker":
        docker_mode.compose("kill", "-s", "SIGKILL", name)
    else:
        with processes.state_lock():
            pid = processes.managed_pid(name)
            if pid is None:
                raise ServiceError(f"{name}: not running under this launcher; nothing to kill")
            processes.kill(name, pid)
    say(f"{name:9} killed (SIGKILL)")


def status(names: Iterable[str] | str | None = None) -> dict[str, bool]:
    """Print one line per broker (ready or not, who runs it); return name -> ready."""
    result: dict[str, bool] = {}
    for name in _names(names):
        ep = endpoint(name)
        pid = processes.managed_pid(name)
        ok = ready(name)
        state = "ready" if ok else ("unresponsive" if pid else "down")
        owner = (
            f"pid {pid}, log {native.log_path(name)}" if pid else "not started by this launcher" if ok else ""
        )
        say(f"{name:9} {state:12} {ep.address:21} {owner}".rstrip())
        result[name] = ok
    return result


def _names(names: Iterable[str] | str | None) -> list[str]:
    if names is None:
        return list(NAMES)
    if isinstance(names, str):
        names = [names]
    chosen = [broker(name).name for name in names]
    return [name for name in NAMES if name in chosen] or list(NAMES)


def _override(action: str, names: Sequence[str]) -> bool:
    """Run ``AMB_<NAME>_<ACTION>_CMD`` for each of ``names`` if set for all of them."""
    commands = [os.environ.get(f"AMB_{name.upper()}_{action}_CMD") for name in names]
    if not all(commands):
        return False
    for command in commands:
        assert command is not None
        subprocess.run(command, shell=True, check=True)
    return True


def _run_parallel(names: Sequence[str], fn: Callable[[str], str]) -> None:
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {name: pool.submit(fn, name) for name in names}
        for name, fut in futures.items():
            try:
                say(fut.result())
            except ServiceError as exc:
                errors.append(str(exc))
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{name}: {exc}")
    if errors:
        raise ServiceError("\n".join(errors))


def _native_up_one(name: str) -> str:
    ep = endpoint(name)
    t0 = time.monotonic()
    pid = processes.managed_pid(name)
    if pid is not None:
        native.wait_ready(name, pid, t0)
        return f"{name:9} ready on {ep.address} (already running, pid {pid})"
    if ready(name):
        return f"{name:9} ready on {ep.address} (already running, not started by this launcher)"
    if not ep.local:
        raise ServiceError(
            f"{name}: {ep.address} (from {broker(name).url_variable}) is not reachable and not local"
        )
    if port_open(ep):
        raise ServiceError(f"{name}: something already listens on {ep.address} but does not answer as {name}")
    pid = native.start(name, ep)
    t1 = time.monotonic()
    native.wait_ready(name, pid, t1)
    now = time.monotonic()
    prep = f", {t1 - t0:.1f}s preparing" if t1 - t0 >= 0.5 else ""
    return f"{name:9} ready on {ep.address} (started, pid {pid}, {now - t1:.1f}s{prep})"


def _native_down_one(name: str, wipe: bool) -> str:
    ep = endpoint(name)
    pid = processes.managed_pid(name)
    if pid is None:
        msg = f"{name:9} not running"
        if ready(name):
            msg = f"{name:9} left alone: {ep.address} is served by something this launcher did not start"
    else:
        processes.stop(name, pid)
        msg = f"{name:9} stopped"
    if wipe:
        native.wipe(name)
        msg += " (data wiped)"
    return msg
