"""The brokers run on this machine (the default mode): Debian's ``redis-server`` and
``rabbitmq-server`` and an Apache Kafka broker assembled from Maven Central by
``scripts/kafka/pom.xml``, configured by the files beside it. Each keeps its data, logs and pid
file under ``.services/<name>/``; as root, Redis and RabbitMQ run as the ``redis`` /
``rabbitmq`` users their packages create."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import string
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from launcher.endpoints import Endpoint, endpoint
from launcher.errors import ServiceError
from launcher.output import say
from launcher.paths import KAFKA_DIR, STATE_DIR
from launcher.probes import ready
from launcher.processes import pid_alive, service_account, spawn

#: How long a started broker may take to accept clients.
READY_TIMEOUT = {"redis": 10.0, "rabbitmq": 60.0, "kafka": 60.0}
#: Longest the first Kafka start may spend fetching the broker's jars.
MAVEN_TIMEOUT = 900.0
#: What to install when a broker's programs are missing.
APT_PACKAGES = {
    "redis": "redis-server",
    "rabbitmq": "rabbitmq-server",
    "kafka": "openjdk-17-jre-headless maven",
}
_PROGRAMS = {"redis": ["redis-server"], "rabbitmq": ["rabbitmq-server"], "kafka": ["java", "mvn"]}


def available(names: Iterable[str]) -> bool:
    """True when the programs that run ``names`` natively are installed."""
    for name in names:
        for program in _PROGRAMS[name]:
            if not shutil.which(program) and not os.access(f"/usr/lib/rabbitmq/bin/{program}", os.X_OK):
                return False
    return True


def start(name: str, ep: Endpoint) -> int:
    """Start broker ``name`` in the background; its pid (it may not accept clients yet)."""
    return _STARTERS[name](ep)


def wait_ready(name: str, pid: int | None, started: float) -> None:
    """Return once broker ``name`` accepts clients; ``ServiceError`` with its log's last lines
    if process ``pid`` exits first or it takes longer than its ``READY_TIMEOUT``."""
    ep = endpoint(name)
    timeout = READY_TIMEOUT[name]
    deadline = time.monotonic() + timeout
    while True:
        if ready(name):
            return
        if pid is not None and not pid_alive(pid):
            raise ServiceError(f"{name}: exited during startup; {_log_report(name)}")
        if time.monotonic() > deadline:
            raise ServiceError(
                f"{name}: not accepting clients on {ep.address} after {timeout:.0f}s "
                f"(started {time.monotonic() - started:.0f}s ago); {_log_report(name)}"
            )
        time.sleep(0.1 if name == "redis" else 0.25)


def wipe(name: str) -> None:
    """Delete broker ``name``'s data and logs (Kafka keeps its jars)."""
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


# -- logs ----------------------------------------------------------------------------------------


def log_path(name: str) -> Path:
    """The main log file of a natively run broker."""
    if name == "rabbitmq":
        return STATE_DIR / "rabbitmq" / "log" / f"{_rabbitmq_nodename(endpoint(name))}.log"
    return STATE_DIR / name / f"{name}.log"


def _log_report(name: str) -> str:
    log = log_path(name)
    text = f"see its log: {log}"
    if name == "rabbitmq":
        startup = STATE_DIR / "rabbitmq" / "log" / "startup.log"
        text += f" (and {startup})"
        return text + (_log_tail(log) or _log_tail(startup))
    return text + _log_tail(log)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # Java stack frames say little: keep the messages.
    text = [t for t in text if not t.lstrip().startswith(("at ", "... "))]
    tail = "\n".join("    " + line for line in text[-lines:])
    return f"\n  last lines of {path}:\n{tail}" if tail else ""


def _need(program: str, name: str, candidates: Sequence[str] = ()) -> str:
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(program)
    if found:
        return found
    raise ServiceError(
        f"{name}: `{program}` not found. Install it with:\n"
        f"  apt-get update && DEBIAN_FRONTEND=noninteractive "
        f"apt-get install -y --no-install-recommends {APT_PACKAGES[name]}\n"
        f"(or use the Docker mode: python scripts/services.py --docker up)"
    )


# -- Redis ---------------------------------------------------------------------------------------


def _start_redis(ep: Endpoint) -> int:
    server = _need("redis-server", "redis")
    workdir = STATE_DIR / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    account = service_account("redis", workdir)
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
    return spawn("redis", cmd, log_path("redis"), account=account)


# -- RabbitMQ ------------------------------------------------------------------------------------


def _rabbitmq_nodename(ep: Endpoint) -> str:
    return os.environ.get("AMB_RABBITMQ_NODENAME") or f"amb{ep.port}@localhost"


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
    (base / "rabbitmq-env.conf").write_text("# intentionally empty: see scripts/launcher/native.py\n")
    (base / "rabbitmq.conf").write_text(
        "# written by scripts/services.py\n"
        "log.console = false\n"
        "log.file.level = info\n"
        "disk_free_limit.absolute = 50MB\n"
        "loopback_users.guest = true\n"
    )
    account = service_account("rabbitmq", base)
    return spawn(
        "rabbitmq",
        [server],
        base / "log" / "startup.log",
        account=account,
        extra_env=_rabbitmq_env(ep),
        cwd=base,
    )


# -- Kafka ---------------------------------------------------------------------------------------


def _kafka_libs() -> Path:
    """Jars of the broker, copied from Maven Central once (skipped while the pom is unchanged)."""
    pom = KAFKA_DIR / "pom.xml"
    libs = STATE_DIR / "kafka" / "libs"
    marker = libs / ".complete"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text().strip() == digest:
        return libs
    mvn = _need("mvn", "kafka")
    shutil.rmtree(libs, ignore_errors=True)
    libs.parent.mkdir(parents=True, exist_ok=True)
    log = STATE_DIR / "kafka" / "maven.log"
    cmd = [
        mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    say("kafka: assembling the broker from Maven Central (first run only) ...")
    t0 = time.monotonic()
    with open(log, "wb") as out:
        try:
            proc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, timeout=MAVEN_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"kafka: Maven took longer than {MAVEN_TIMEOUT:.0f}s; see {log}") from exc
    if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise ServiceError(f"kafka: Maven failed (exit {proc.returncode}); see {log}{_log_tail(log, 30)}")
    marker.write_text(digest + "\n")
    say(f"kafka: broker jars ready in {time.monotonic() - t0:.1f}s")
    return libs


def _kafka_controller_port(ep: Endpoint) -> int:
    raw = os.environ.get("AMB_KAFKA_CONTROLLER_PORT")
    return int(raw) if raw else ep.port + 1


def _kafka_properties(ep: Endpoint, data: Path) -> str:
    """``scripts/kafka/server.properties`` with this endpoint's listeners and data folder."""
    bind = ep.bind_host
    host = "127.0.0.1" if bind == "0.0.0.0" else bind
    if ":" in host:
        host = f"[{host}]"
    template = string.Template((KAFKA_DIR / "server.properties").read_text(encoding="utf-8"))
    return template.substitute(host=host, port=ep.port, controller_port=_kafka_controller_port(ep), data=data)


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
    props = base / "server.properties"
    props.write_text(_kafka_properties(ep, data))
    jvm = [
        java,
        "-Xms256m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={base}",
        "-cp",
        str(libs / "*"),
    ]
    if not (data / "meta.properties").exists():
        shutil.rmtree(data, ignore_errors=True)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        fmt_log = base / "format.log"
        with open(fmt_log, "wb") as out:
            fmt = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
        if fmt.returncode != 0:
            raise ServiceError(f"kafka: storage format failed; see {fmt_log}{_log_tail(fmt_log)}")
    return spawn("kafka", [*jvm, "kafka.Kafka", str(props)], log_path("kafka"), cwd=base)


_STARTERS: dict[str, Callable[[Endpoint], int]] = {
    "redis": _start_redis,
    "rabbitmq": _start_rabbitmq,
    "kafka": _start_kafka,
}
