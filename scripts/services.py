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

Endpoints come from ``AMB_REDIS_URL``, ``AMB_RABBITMQ_URL`` and ``AMB_KAFKA_URL`` (defaults
``redis://127.0.0.1:6379/0``, ``amqp://guest:guest@127.0.0.1:5672/``,
``kafka://127.0.0.1:9092``).

Modes:

* native (default): Debian's ``redis-server`` and ``rabbitmq-server`` packages and an Apache
  Kafka broker assembled from Maven Central by ``scripts/kafka/pom.xml``, each started in
  the background with its data, logs and pid file under ``.services/<name>/`` at the repo
  root.  When run as root, Redis and RabbitMQ run as the ``redis`` / ``rabbitmq`` users the
  packages create.
* docker (``--docker`` or ``AMB_SERVICES_MODE=docker``): ``compose.yaml`` at the repo root.
  ``AMB_SERVICES_MODE=auto`` picks docker only when the native programs are missing and a
  Docker engine answers.

``AMB_<NAME>_RESTART_CMD`` (e.g. ``AMB_REDIS_RESTART_CMD="docker restart redis"``) makes
``restart NAME`` run that shell command instead, then wait until the broker is ready: for
brokers this launcher does not manage (CI service containers, a remote host, ...).
``AMB_<NAME>_KILL_CMD``, ``AMB_<NAME>_STOP_CMD`` and ``AMB_<NAME>_START_CMD`` do the same for
``kill NAME``, ``down NAME`` and ``up NAME`` (``up`` then waits until the broker is ready).

Importable: ``up(names)``, ``down(names)``, ``restart(name)``, ``status(names)``, ``env()``;
failures raise :class:`ServiceError`.  Stdlib only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

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

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".services"
COMPOSE_FILE = ROOT / "compose.yaml"
KAFKA_POM = ROOT / "scripts" / "kafka" / "pom.xml"

NAMES: tuple[str, ...] = ("redis", "rabbitmq", "kafka")
ENV_VARS = {
    "redis": "AMB_REDIS_URL",
    "rabbitmq": "AMB_RABBITMQ_URL",
    "kafka": "AMB_KAFKA_URL",
}
DEFAULT_URLS = {
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "kafka": "kafka://127.0.0.1:9092",
}
DEFAULT_PORTS = {"redis": 6379, "rabbitmq": 5672, "kafka": 9092}
READY_TIMEOUT = {"redis": 10.0, "rabbitmq": 60.0, "kafka": 60.0}
STOP_TIMEOUT = {"redis": 15.0, "rabbitmq": 60.0, "kafka": 60.0}
MAVEN_TIMEOUT = 900.0
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}
APT_PACKAGES = {
    "redis": "redis-server",
    "rabbitmq": "rabbitmq-server",
    "kafka": "openjdk-17-jre-headless maven",
}

_print_lock = threading.Lock()


class ServiceError(RuntimeError):
    """A broker could not be started, stopped or reached."""


def _say(msg: str) -> None:
    with _print_lock:
        print(msg, flush=True)


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    vhost: str = "/"

    @property
    def local(self) -> bool:
        return self.host in LOCAL_HOSTS

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def bind_host(self) -> str:
        """The address to listen on: an IP literal."""
        return "127.0.0.1" if self.host in ("localhost", "::") else self.host


def _check_name(name: str) -> str:
    if name not in NAMES:
        raise ServiceError(f"unknown broker {name!r}; expected one of {', '.join(NAMES)}")
    return name


def endpoint(name: str) -> Endpoint:
    """Where broker ``name`` is expected, from ``AMB_<NAME>_URL`` or the default."""
    _check_name(name)
    url = os.environ.get(ENV_VARS[name]) or DEFAULT_URLS[name]
    if name == "kafka":
        # kafka://host:port[,host2:port2...] or a bare host:port list; the first one counts.
        rest = url.split("://", 1)[1] if "://" in url else url
        first = rest.split(",", 1)[0].split("/", 1)[0]
        parts = urlsplit("//" + first)
    else:
        parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or DEFAULT_PORTS[name]
    except ValueError as exc:
        raise ServiceError(f"{ENV_VARS[name]}={url!r}: bad port") from exc
    vhost = "/"
    if name == "rabbitmq":
        path = parts.path.removeprefix("/")
        vhost = unquote(path) if path else "/"
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if name == "rabbitmq":
        user = user or "guest"
        password = password or "guest"
    return Endpoint(name, url, host, port, user, password, vhost)


def env() -> dict[str, str]:
    """The AMB_*_URL variables the tests should use (overrides are reflected)."""
    return {ENV_VARS[n]: endpoint(n).url for n in NAMES}


# --------------------------------------------------------------------------- probes


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        buf += chunk
    return bytes(buf)


def _connect(ep: Endpoint, timeout: float) -> socket.socket:
    return socket.create_connection((ep.host, ep.port), timeout=timeout)


def port_open(ep: Endpoint, timeout: float = 0.5) -> bool:
    try:
        with _connect(ep, timeout):
            return True
    except OSError:
        return False


def _redis_ready(ep: Endpoint, timeout: float) -> bool:
    def cmd(*args: str) -> bytes:
        out = b"*%d\r\n" % len(args)
        for a in args:
            raw = a.encode()
            out += b"$%d\r\n%s\r\n" % (len(raw), raw)
        return out

    with _connect(ep, timeout) as sock:
        reader = sock.makefile("rb")
        if ep.password:
            auth = (ep.username, ep.password) if ep.username else (ep.password,)
            sock.sendall(cmd("AUTH", *auth))
            if not reader.readline().startswith(b"+OK"):
                return False
        sock.sendall(cmd("PING"))
        return reader.readline().startswith(b"+PONG")


def _amqp_frame(cls: int, meth: int, args: bytes) -> bytes:
    payload = struct.pack(">HH", cls, meth) + args
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


def _shortstr(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">B", len(raw)) + raw


def _longstr(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def _amqp_read_method(sock: socket.socket) -> tuple[int, int, bytes]:
    while True:
        ftype, _channel, size = struct.unpack(">BHI", _recv_exact(sock, 7))
        payload = _recv_exact(sock, size)
        if _recv_exact(sock, 1) != b"\xce":
            raise ConnectionError("bad AMQP frame end")
        if ftype == 1:
            cls, meth = struct.unpack(">HH", payload[:4])
            return cls, meth, payload[4:]
        # heartbeats and anything else: ignore


def _rabbitmq_ready(ep: Endpoint, timeout: float) -> bool:
    """A real AMQP 0-9-1 login: protocol header, Start/StartOk (PLAIN), Tune/TuneOk, Open."""
    with _connect(ep, timeout) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        cls, meth, _ = _amqp_read_method(sock)
        if (cls, meth) != (10, 10):  # connection.start
            return False
        props = _shortstr("product") + b"S" + _longstr(b"amb scripts/services.py")
        response = b"\0" + (ep.username or "").encode() + b"\0" + (ep.password or "").encode()
        start_ok = (
            struct.pack(">I", len(props))
            + props
            + _shortstr("PLAIN")
            + _longstr(response)
            + _shortstr("en_US")
        )
        sock.sendall(_amqp_frame(10, 11, start_ok))
        cls, meth, args = _amqp_read_method(sock)
        if (cls, meth) != (
            10,
            30,
        ):  # connection.tune (else: close, e.g. bad credentials)
            return False
        channel_max, frame_max, _heartbeat = struct.unpack(">HIH", args[:8])
        sock.sendall(_amqp_frame(10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
        sock.sendall(_amqp_frame(10, 40, _shortstr(ep.vhost) + _shortstr("") + b"\0"))
        cls, meth, _ = _amqp_read_method(sock)
        if (cls, meth) != (10, 41):  # connection.open-ok
            return False
        sock.sendall(_amqp_frame(10, 50, struct.pack(">H", 200) + _shortstr("bye") + b"\0" * 4))
        with contextlib.suppress(OSError):
            _amqp_read_method(sock)  # connection.close-ok
        return True


def _kafka_call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client_id = b"amb-services"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    data = _recv_exact(sock, size)
    (got_corr,) = struct.unpack(">i", data[:4])
    if got_corr != corr:
        raise ConnectionError("Kafka correlation id mismatch")
    return data[4:]


def _kafka_ready(ep: Endpoint, timeout: float) -> bool:
    """ApiVersions v0 answered without error, then Metadata lists at least one live broker."""
    with _connect(ep, timeout) as sock:
        resp = _kafka_call(sock, 18, 0, 1, b"")
        error, count = struct.unpack(">hi", resp[:6])
        if error != 0 or count <= 0:
            return False
        versions: dict[int, tuple[int, int]] = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i : 12 + 6 * i])
            versions[key] = (lo, hi)
        lo, hi = versions.get(3, (0, -1))
        if not lo <= 4 <= hi:
            return True  # cannot ask Metadata v4 (non-flexible); ApiVersions will do
        # Metadata v4: topics = [] (none), allow_auto_topic_creation = false
        resp = _kafka_call(sock, 3, 4, 2, struct.pack(">ib", 0, 0))
        _throttle, brokers = struct.unpack(">ii", resp[:8])
        return bool(brokers > 0)


_PROBES: dict[str, Callable[[Endpoint, float], bool]] = {
    "redis": _redis_ready,
    "rabbitmq": _rabbitmq_ready,
    "kafka": _kafka_ready,
}


def ready(name: str, timeout: float = 2.0) -> bool:
    """True when broker ``name`` accepts clients right now."""
    try:
        return _PROBES[name](endpoint(name), timeout)
    except (OSError, struct.error, ValueError):
        return False


# --------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
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


_MARKERS = {"redis": "redis-server", "rabbitmq": "rabbitmq", "kafka": "kafka.Kafka"}


def _pidfile(name: str) -> Path:
    return STATE_DIR / name / "pid"


def managed_pid(name: str) -> int | None:
    """The pid of broker ``name`` if this launcher started it and it still runs."""
    path = _pidfile(name)
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if _pid_alive(pid):
        cmd = _cmdline(pid)
        if not cmd or _MARKERS[name] in cmd:
            return pid
    with contextlib.suppress(OSError):
        path.unlink()
    return None


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # Java stack frames say little: keep the messages.
    text = [t for t in text if not t.lstrip().startswith(("at ", "... "))]
    tail = "\n".join("    " + line for line in text[-lines:])
    return f"\n  last lines of {path}:\n{tail}" if tail else ""


@dataclass
class _Account:
    uid: int
    gid: int
    name: str


def _service_account(user: str, workdir: Path) -> _Account | None:
    """The unprivileged account to run a broker as (root only), if it can use ``workdir``."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        entry = pwd.getpwnam(user)
    except (ImportError, KeyError):
        return None
    acct = _Account(entry.pw_uid, entry.pw_gid, user)
    _chown_tree(workdir, acct)
    probe = subprocess.run(
        ["test", "-w", str(workdir)],
        user=acct.uid,
        group=acct.gid,
        extra_groups=[],
        check=False,
    )
    if probe.returncode != 0:
        _say(f"{user}: cannot reach {workdir} as user {user!r}; running it as root instead")
        return None
    return acct


def _chown_tree(path: Path, acct: _Account) -> None:
    os.chown(path, acct.uid, acct.gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in dirnames + filenames:
            with contextlib.suppress(OSError):
                os.chown(
                    os.path.join(dirpath, entry),
                    acct.uid,
                    acct.gid,
                    follow_symlinks=False,
                )


def _spawn(
    name: str,
    cmd: Sequence[str],
    log: Path,
    *,
    account: _Account | None = None,
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
    # child when it exits, _pid_alive() reaps it with waitpid().
    proc.returncode = 0
    _pidfile(name).write_text(f"{proc.pid}\n")
    return proc.pid


def _stop_pid(name: str, pid: int) -> None:
    """SIGTERM the broker's session leader (graceful), then SIGKILL what is left of its group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT[name]
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        _say(f"{name}: did not stop within {STOP_TIMEOUT[name]:.0f}s; killing it")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        _pidfile(name).unlink()


# --------------------------------------------------------------------------- native brokers


def _need(program: str, name: str, candidates: Sequence[str] = ()) -> str:
    for cand in candidates:
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which(program)
    if found:
        return found
    raise ServiceError(
        f"{name}: `{program}` not found. Install it with:\n"
        f"  apt-get update && DEBIAN_FRONTEND=noninteractive "
        f"apt-get install -y --no-install-recommends {APT_PACKAGES[name]}\n"
        f"(or use the Docker mode: python scripts/services.py --docker up)"
    )


def _log_path(name: str) -> Path:
    """The main log file of a natively run broker."""
    if name == "rabbitmq":
        return STATE_DIR / "rabbitmq" / "log" / f"{_rabbitmq_nodename(endpoint(name))}.log"
    return STATE_DIR / name / f"{name}.log"


def _log_report(name: str) -> str:
    log = _log_path(name)
    text = f"see its log: {log}"
    if name == "rabbitmq":
        startup = STATE_DIR / "rabbitmq" / "log" / "startup.log"
        text += f" (and {startup})"
        return text + (_log_tail(log) or _log_tail(startup))
    return text + _log_tail(log)


def _rabbitmq_nodename(ep: Endpoint) -> str:
    return os.environ.get("AMB_RABBITMQ_NODENAME") or f"amb{ep.port}@localhost"


def _start_redis(ep: Endpoint) -> int:
    server = _need("redis-server", "redis")
    workdir = STATE_DIR / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    account = _service_account("redis", workdir)
    cmd = [
        server,
        "--bind", ep.bind_host,
        "--port", str(ep.port),
        "--dir", str(workdir),
        "--dbfilename", "dump.rdb",
        # Every write is in the append-only file, fsynced before Redis answers: what a
        # confirmed publish reached survives `kill -9` (the chaos suite checks it). No
        # periodic snapshots; on SIGTERM (stop/restart) it also writes one.
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--shutdown-on-sigterm", "save",
        "--daemonize", "no",
        "--logfile", "",
        "--protected-mode", "no",
    ]  # fmt: skip
    return _spawn("redis", cmd, _log_path("redis"), account=account)


def _rabbitmq_env(ep: Endpoint) -> dict[str, str]:
    base = STATE_DIR / "rabbitmq"
    return {
        "HOME": str(base / "home"),  # holds the Erlang cookie shared with rabbitmqctl
        "RABBITMQ_NODENAME": _rabbitmq_nodename(ep),
        "RABBITMQ_NODE_IP_ADDRESS": ep.bind_host,
        "RABBITMQ_NODE_PORT": str(ep.port),
        "RABBITMQ_DIST_PORT": str(ep.port + 20100),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
    }


def _rabbitmq_bin(tool: str) -> str:
    # Debian's /usr/sbin wrappers `su` to rabbitmq and cd to /var/lib/rabbitmq; the real
    # scripts in /usr/lib/rabbitmq/bin run as whoever starts them.
    return _need(tool, "rabbitmq", [f"/usr/lib/rabbitmq/bin/{tool}"])


def _start_rabbitmq(ep: Endpoint) -> int:
    server = _rabbitmq_bin("rabbitmq-server")
    base = STATE_DIR / "rabbitmq"
    for sub in ("home", "mnesia", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq-env.conf").write_text("# intentionally empty: see scripts/services.py\n")
    (base / "rabbitmq.conf").write_text(
        "# written by scripts/services.py\n"
        "log.console = false\n"
        "log.file.level = info\n"
        "disk_free_limit.absolute = 50MB\n"
        "loopback_users.guest = true\n"
    )
    account = _service_account("rabbitmq", base)
    return _spawn(
        "rabbitmq",
        [server],
        base / "log" / "startup.log",
        account=account,
        extra_env=_rabbitmq_env(ep),
        cwd=base,
    )


def _kafka_libs() -> Path:
    """Jars of the broker, copied from Maven Central once (skipped while the pom is unchanged)."""
    libs = STATE_DIR / "kafka" / "libs"
    marker = libs / ".complete"
    digest = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text().strip() == digest:
        return libs
    mvn = _need("mvn", "kafka")
    shutil.rmtree(libs, ignore_errors=True)
    libs.parent.mkdir(parents=True, exist_ok=True)
    log = STATE_DIR / "kafka" / "maven.log"
    cmd = [
        mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(KAFKA_POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    _say("kafka: assembling the broker from Maven Central (first run only) ...")
    t0 = time.monotonic()
    with open(log, "wb") as out:
        try:
            proc = subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=MAVEN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"kafka: Maven took longer than {MAVEN_TIMEOUT:.0f}s; see {log}") from exc
    if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise ServiceError(f"kafka: Maven failed (exit {proc.returncode}); see {log}{_log_tail(log, 30)}")
    marker.write_text(digest + "\n")
    _say(f"kafka: broker jars ready in {time.monotonic() - t0:.1f}s")
    return libs


def _kafka_controller_port(ep: Endpoint) -> int:
    raw = os.environ.get("AMB_KAFKA_CONTROLLER_PORT")
    return int(raw) if raw else ep.port + 1


def _start_kafka(ep: Endpoint) -> int:
    java = _need(
        "java",
        "kafka",
        [os.path.join(os.environ.get("JAVA_HOME", "/nonexistent"), "bin", "java")],
    )
    base = STATE_DIR / "kafka"
    base.mkdir(parents=True, exist_ok=True)
    libs = _kafka_libs()
    data = base / "data"
    bind = ep.bind_host
    host = "127.0.0.1" if bind == "0.0.0.0" else bind
    if ":" in host:
        host = f"[{host}]"
    cport = _kafka_controller_port(ep)
    props = base / "server.properties"
    props.write_text(
        "# written by scripts/services.py: single-node KRaft broker+controller for tests\n"
        "process.roles=broker,controller\n"
        "node.id=1\n"
        f"controller.quorum.voters=1@{host}:{cport}\n"
        f"listeners=PLAINTEXT://{host}:{ep.port},CONTROLLER://{host}:{cport}\n"
        f"advertised.listeners=PLAINTEXT://{host}:{ep.port}\n"
        "controller.listener.names=CONTROLLER\n"
        "inter.broker.listener.name=PLAINTEXT\n"
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
        f"log.dirs={data}\n"
        "num.partitions=1\n"
        "default.replication.factor=1\n"
        "min.insync.replicas=1\n"
        "auto.create.topics.enable=true\n"
        "delete.topic.enable=true\n"
        "group.initial.rebalance.delay.ms=0\n"
        "offsets.topic.replication.factor=1\n"
        "offsets.topic.num.partitions=1\n"
        "transaction.state.log.replication.factor=1\n"
        "transaction.state.log.min.isr=1\n"
        "transaction.state.log.num.partitions=1\n"
        "share.coordinator.state.topic.replication.factor=1\n"
        "share.coordinator.state.topic.min.isr=1\n"
        "num.network.threads=2\n"
        "num.io.threads=4\n"
        "num.recovery.threads.per.data.dir=1\n"
        "log.retention.hours=24\n"
        "log.segment.bytes=67108864\n"
    )
    log4j = base / "log4j2.properties"
    log4j.write_text(
        "status = warn\n"
        "appender.out.type = Console\n"
        "appender.out.name = OUT\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.out.ref = OUT\n"
        "logger.state.name = state.change.logger\n"
        "logger.state.level = WARN\n"
        "logger.request.name = kafka.request.logger\n"
        "logger.request.level = WARN\n"
    )
    classpath = str(libs / "*")
    jvm = [
        java,
        "-Xms256m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={base}",
        "-cp",
        classpath,
    ]
    if not (data / "meta.properties").exists():
        shutil.rmtree(data, ignore_errors=True)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        fmt_log = base / "format.log"
        with open(fmt_log, "wb") as out:
            fmt = subprocess.run(
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
        if fmt.returncode != 0:
            raise ServiceError(f"kafka: storage format failed; see {fmt_log}{_log_tail(fmt_log)}")
    return _spawn("kafka", [*jvm, "kafka.Kafka", str(props)], _log_path("kafka"), cwd=base)


_STARTERS: dict[str, Callable[[Endpoint], int]] = {
    "redis": _start_redis,
    "rabbitmq": _start_rabbitmq,
    "kafka": _start_kafka,
}


def _wait_ready(name: str, pid: int | None, started: float) -> None:
    ep = endpoint(name)
    timeout = READY_TIMEOUT[name]
    deadline = time.monotonic() + timeout
    while True:
        if ready(name):
            return
        if pid is not None and not _pid_alive(pid):
            raise ServiceError(f"{name}: exited during startup; {_log_report(name)}")
        if time.monotonic() > deadline:
            raise ServiceError(
                f"{name}: not accepting clients on {ep.address} after {timeout:.0f}s "
                f"(started {time.monotonic() - started:.0f}s ago); {_log_report(name)}"
            )
        time.sleep(0.1 if name == "redis" else 0.25)


def _native_up_one(name: str) -> str:
    ep = endpoint(name)
    t0 = time.monotonic()
    pid = managed_pid(name)
    if pid is not None:
        _wait_ready(name, pid, t0)
        return f"{name:9} ready on {ep.address} (already running, pid {pid})"
    if ready(name):
        return f"{name:9} ready on {ep.address} (already running, not started by this launcher)"
    if not ep.local:
        raise ServiceError(f"{name}: {ep.address} (from {ENV_VARS[name]}) is not reachable and not local")
    if port_open(ep):
        raise ServiceError(f"{name}: something already listens on {ep.address} but does not answer as {name}")
    pid = _STARTERS[name](ep)
    t1 = time.monotonic()
    _wait_ready(name, pid, t1)
    now = time.monotonic()
    prep = f", {t1 - t0:.1f}s preparing" if t1 - t0 >= 0.5 else ""
    return f"{name:9} ready on {ep.address} (started, pid {pid}, {now - t1:.1f}s{prep})"


def _native_down_one(name: str, wipe: bool) -> str:
    ep = endpoint(name)
    pid = managed_pid(name)
    if pid is None:
        msg = f"{name:9} not running"
        if ready(name):
            msg = f"{name:9} left alone: {ep.address} is served by something this launcher did not start"
    else:
        _stop_pid(name, pid)
        msg = f"{name:9} stopped"
    if wipe:
        keep = {"libs"} if name == "kafka" else set()
        workdir = STATE_DIR / name
        if workdir.is_dir():
            for entry in workdir.iterdir():
                if entry.name in keep:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        msg += " (data wiped)"
    return msg


# --------------------------------------------------------------------------- docker mode


def _compose(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
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


def _docker_available() -> bool:
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


def _native_available(names: Iterable[str]) -> bool:
    programs = {
        "redis": ["redis-server"],
        "rabbitmq": ["rabbitmq-server"],
        "kafka": ["java", "mvn"],
    }
    for name in names:
        for prog in programs[name]:
            if not shutil.which(prog) and not os.access(f"/usr/lib/rabbitmq/bin/{prog}", os.X_OK):
                return False
    return True


def _mode(names: Iterable[str], docker: bool | None = None) -> str:
    if docker is True:
        return "docker"
    if docker is False:
        return "native"
    mode = os.environ.get("AMB_SERVICES_MODE", "native").strip().lower() or "native"
    if mode == "auto":
        if _native_available(names) or not _docker_available():
            return "native"
        return "docker"
    if mode not in ("native", "docker"):
        raise ServiceError(f"AMB_SERVICES_MODE={mode!r}: expected native, docker or auto")
    return mode


# --------------------------------------------------------------------------- public API


def _names(names: Iterable[str] | str | None) -> list[str]:
    if names is None:
        return list(NAMES)
    if isinstance(names, str):
        names = [names]
    chosen = [_check_name(n) for n in names]
    return [n for n in NAMES if n in chosen] or list(NAMES)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
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


def _run_parallel(names: Sequence[str], fn: Callable[[str], str]) -> None:
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {name: pool.submit(fn, name) for name in names}
        for name, fut in futures.items():
            try:
                _say(fut.result())
            except ServiceError as exc:
                errors.append(str(exc))
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{name}: {exc}")
    if errors:
        raise ServiceError("\n".join(errors))


def _override(action: str, names: Sequence[str]) -> bool:
    """Run ``AMB_<NAME>_<ACTION>_CMD`` for each of ``names`` if set for all of them."""
    commands = [os.environ.get(f"AMB_{name.upper()}_{action}_CMD") for name in names]
    if not all(commands):
        return False
    for command in commands:
        assert command is not None
        subprocess.run(command, shell=True, check=True)
    return True


def up(names: Iterable[str] | str | None = None, *, docker: bool | None = None) -> None:
    """Start the named brokers (default: all) unless already up; block until all are ready."""
    chosen = _names(names)
    if _override("START", chosen):
        for name in chosen:
            _wait_ready(name, None, time.monotonic())
            _say(f"{name:9} ready on {endpoint(name).address} (AMB_{name.upper()}_START_CMD)")
        return
    if _mode(chosen, docker) == "docker":
        _compose("up", "-d", "--wait", *chosen)
        for name in chosen:
            _wait_ready(name, None, time.monotonic())
            _say(f"{name:9} ready on {endpoint(name).address} (docker compose)")
        return
    with _locked():
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
    if _mode(chosen, docker) == "docker":
        if set(chosen) == set(NAMES):
            _compose("down", *(["-v"] if wipe else []))
        else:
            _compose("rm", "-s", "-f", *(["-v"] if wipe else []), *chosen)
        return
    with _locked():
        _run_parallel(chosen, lambda n: _native_down_one(n, wipe))


def restart(name: str, *, docker: bool | None = None) -> None:
    """Stop and start broker ``name`` on the same port keeping its data; block until ready."""
    _check_name(name)
    t0 = time.monotonic()
    override = os.environ.get(f"AMB_{name.upper()}_RESTART_CMD")
    if override:
        subprocess.run(override, shell=True, check=True)
        _wait_ready(name, None, t0)
    elif _mode([name], docker) == "docker":
        _compose("restart", name)
        _wait_ready(name, None, t0)
    else:
        with _locked():
            pid = managed_pid(name)
            if pid is None and ready(name):
                raise ServiceError(
                    f"{name}: {endpoint(name).address} is served by something this launcher did "
                    f"not start; set AMB_{name.upper()}_RESTART_CMD to restart it"
                )
            if pid is not None:
                _stop_pid(name, pid)
            _native_up_one(name)
    _say(f"{name:9} restarted, ready on {endpoint(name).address} ({time.monotonic() - t0:.1f}s)")


def kill(name: str, *, docker: bool | None = None) -> None:
    """Kill broker ``name`` with SIGKILL, as a crash would: no shutdown, no final write. It
    stays down until `up` (or `restart`) starts it again, with whatever it had on disk."""
    _check_name(name)
    override = os.environ.get(f"AMB_{name.upper()}_KILL_CMD")
    if override:
        subprocess.run(override, shell=True, check=True)
    elif _mode([name], docker) == "docker":
        _compose("kill", "-s", "SIGKILL", name)
    else:
        with _locked():
            pid = managed_pid(name)
            if pid is None:
                raise ServiceError(f"{name}: not running under this launcher; nothing to kill")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                _pidfile(name).unlink()
    _say(f"{name:9} killed (SIGKILL)")


def status(names: Iterable[str] | str | None = None) -> dict[str, bool]:
    """Print one line per broker (ready or not, who runs it); return name -> ready."""
    result: dict[str, bool] = {}
    for name in _names(names):
        ep = endpoint(name)
        pid = managed_pid(name)
        ok = ready(name)
        state = "ready" if ok else ("unresponsive" if pid else "down")
        owner = f"pid {pid}, log {_log_path(name)}" if pid else "not started by this launcher" if ok else ""
        _say(f"{name:9} {state:12} {ep.address:21} {owner}".rstrip())
        result[name] = ok
    return result


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="services.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--docker",
        dest="docker",
        action="store_const",
        const=True,
        help="use compose.yaml",
    )
    group.add_argument(
        "--native",
        dest="docker",
        action="store_const",
        const=False,
        help="run the brokers here",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd, help_text in (
        ("up", "start brokers and wait until they accept clients"),
        ("down", "stop brokers started by this launcher"),
        ("status", "show whether brokers accept clients"),
    ):
        p = sub.add_parser(cmd, help=help_text)
        p.add_argument(
            "names",
            nargs="*",
            metavar="NAME",
            help=f"any of {', '.join(NAMES)} (default: all)",
        )
        if cmd == "down":
            p.add_argument("--wipe", action="store_true", help="also delete their data")
    p = sub.add_parser("restart", help="stop and start one broker, keeping its data")
    p.add_argument("--kill", action="store_true", help="stop it with SIGKILL (a crash), not gracefully")
    p.add_argument("name", choices=NAMES)
    p = sub.add_parser("kill", help="kill one broker with SIGKILL (a crash); `up` starts it again")
    p.add_argument("name", choices=NAMES)
    sub.add_parser("env", help="print AMB_*_URL=... lines")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            t0 = time.monotonic()
            up(args.names or None, docker=args.docker)
            _say(f"all ready in {time.monotonic() - t0:.1f}s")
        elif args.command == "down":
            down(args.names or None, wipe=args.wipe, docker=args.docker)
        elif args.command == "restart":
            if args.kill:
                kill(args.name, docker=args.docker)
                up([args.name], docker=args.docker)
            else:
                restart(args.name, docker=args.docker)
        elif args.command == "kill":
            kill(args.name, docker=args.docker)
        elif args.command == "status":
            return 0 if all(status(args.names or None).values()) else 3
        elif args.command == "env":
            for key, value in env().items():
                print(f"{key}={value}")
    except ServiceError as exc:
        print(f"services.py: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
