"""The processes of natively run brokers: pid files, spawning, stopping, killing, and the lock
that serialises launcher runs. Each broker runs in its own session (process group) and its pid
is kept in ``.services/<name>/pid``."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.output import say
from launcher.paths import STATE_DIR

#: How long a broker may take to stop on SIGTERM before it is killed.
STOP_TIMEOUT = {"redis": 15.0, "rabbitmq": 60.0, "kafka": 60.0}
#: What each broker's command line contains: a recycled pid running something else is not it.
_MARKERS = {"redis": "redis-server", "rabbitmq": "rabbitmq", "kafka": "kafka.Kafka"}


def pid_alive(pid: int) -> bool:
    # Our own child (started by this process): reap it once it has exited.
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pidfile(name: str) -> Path:
    return STATE_DIR / name / "pid"


def managed_pid(name: str) -> int | None:
    """The pid of broker ``name`` if this launcher started it and it still runs."""
    path = pidfile(name)
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid_alive(pid):
        cmd = _cmdline(pid)
        if not cmd or _MARKERS[name] in cmd:
            return pid
    with contextlib.suppress(OSError):
        path.unlink()
    return None


@dataclass
class Account:
    uid: int
    gid: int
    name: str


def service_account(user: str, workdir: Path) -> Account | None:
    """The unprivileged account to run a broker as (root only), if it can use ``workdir``."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        entry = pwd.getpwnam(user)
    except (ImportError, KeyError):
        return None
    account = Account(entry.pw_uid, entry.pw_gid, user)
    _chown_tree(workdir, account)
    probe = subprocess.run(
        ["test", "-w", str(workdir)],
        user=account.uid,
        group=account.gid,
        extra_groups=[],
        check=False,
    )
    if probe.returncode != 0:
        say(f"{user}: cannot reach {workdir} as user {user!r}; running it as root instead")
        return None
    return account


def _chown_tree(path: Path, account: Account) -> None:
    os.chown(path, account.uid, account.gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in dirnames + filenames:
            with contextlib.suppress(OSError):
                os.chown(os.path.join(dirpath, entry), account.uid, account.gid, follow_symlinks=False)


def spawn(
    name: str,
    cmd: Sequence[str],
    log: Path,
    *,
    account: Account | None = None,
    extra_env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``cmd`` in its own session, output appended to ``log``; record its pid."""
    environ = dict(os.environ)
    environ.update(extra_env or {})
    kwargs: dict[str, Any] = {}
    if account is not None:
        kwargs.update(user=account.uid, group=account.gid, extra_groups=[])
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=environ,
            cwd=str(cwd or log.parent),
            **kwargs,
        )
    # The broker outlives this Popen object (and this process): mark it detached so the
    # object does not warn "subprocess is still running" when collected. If it is our
    # child when it exits, pid_alive() reaps it with waitpid().
    proc.returncode = 0
    pidfile(name).write_text(f"{proc.pid}\n")
    return proc.pid


def stop(name: str, pid: int) -> None:
    """SIGTERM the broker's session leader (graceful), then SIGKILL what is left of its group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT[name]
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        say(f"{name}: did not stop within {STOP_TIMEOUT[name]:.0f}s; killing it")
    kill(name, pid)


def kill(name: str, pid: int) -> None:
    """SIGKILL the broker's whole process group, as a crash would; wait until it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        pidfile(name).unlink()


@contextlib.contextmanager
def state_lock() -> Iterator[None]:
    """Serialise launcher runs (several test processes may call it at once)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(STATE_DIR, 0o755)  # the broker accounts must be able to traverse it
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(STATE_DIR / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
