"""The adapter's options: `KafkaBroker`'s keyword arguments, validated and kept in `Options`,
its URL read, and its client options sorted into what each aiokafka client takes."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.conn import create_conn  # type: ignore[import-untyped]

SCHEME = "kafka://"
#: What the adapter sets unless told otherwise; any of it can be overridden by name.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger_ms": 0,
    "max_batch_size": 128 * 1024,
    "enable_idempotence": True,
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    "auto_offset_reset": "earliest",
    "heartbeat_interval_ms": 500,
    "session_timeout_ms": 10_000,
}
#: The shared ungrouped consumer gains partitions while it runs (each new subscription, each
#: topic a wildcard finds), and a partition added during a fetch waits for that fetch to end:
#: shorter fetch waits and fetcher naps get a new subscription's first messages to it sooner.
FANOUT_DEFAULTS: dict[str, Any] = {"fetch_max_wait_ms": 100, "consumer_timeout_ms": 50}
#: Consumer options that only mean something to a group member.
_GROUP_ONLY = {
    "heartbeat_interval_ms",
    "session_timeout_ms",
    "rebalance_timeout_ms",
    "max_poll_interval_ms",
    "partition_assignment_strategy",
    "group_instance_id",
    "auto_commit_interval_ms",
}
#: The connection settings of the probe's own connection (see `amb_kafka._health`).
_CONNECTION_OPTIONS = frozenset(inspect.signature(create_conn).parameters) - {"host", "port", "on_close"}
#: Options this adapter sets itself: passing them would break a guarantee it gives.
_RESERVED = {
    "producer": {
        "acks",
        "bootstrap_servers",
        "loop",
        "key_serializer",
        "value_serializer",
        "transactional_id",
    },
    "consumer": {
        "bootstrap_servers",
        "loop",
        "group_id",
        "enable_auto_commit",
        "key_deserializer",
        "value_deserializer",
    },
}


def bootstrap_servers(url_or_hosts: str | Sequence[str]) -> list[str]:
    """``kafka://h1:9092,h2:9092``, ``h1:9092,h2:9092`` or a list of ``host:port``, as a list."""
    if not isinstance(url_or_hosts, str):
        hosts = [str(host).strip() for host in url_or_hosts]
    else:
        text = url_or_hosts.strip()
        if text[: len(SCHEME)].lower() == SCHEME:
            text = text[len(SCHEME) :]
        elif "://" in text:
            raise ValueError(f"KafkaBroker needs a kafka:// URL, not {redact(url_or_hosts)!r}")
        text = text.rstrip("/")
        if "/" in text or "?" in text or "@" in text:
            raise ValueError(
                f"{redact(url_or_hosts)!r}: a Kafka URL is kafka://host:port[,host:port...]; pass "
                "credentials and TLS settings as options (security_protocol=, sasl_plain_username=, "
                "sasl_plain_password=, ssl_context=, ...)"
            )
        hosts = [host.strip() for host in text.split(",")]
    hosts = [host for host in hosts if host]
    if not hosts:
        raise ValueError(f"no Kafka bootstrap server in {url_or_hosts!r}")
    return hosts


def redact(url: str) -> str:
    """``url`` without what a URL's user-info part could hide: the password (and, for a user-info
    part without one, whatever it is, which could be a token)."""
    return _USERINFO.sub(lambda found: f"{found['scheme']}{found['user'] or ''}***@", url)


_USERINFO = re.compile(r"(?P<scheme>^[A-Za-z][A-Za-z0-9+.-]*://|^)(?P<user>[^:@/]*:)?[^@/]*@")


@cache
def _accepted(client: type) -> frozenset[str]:
    return frozenset(
        name
        for name, parameter in inspect.signature(client).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY or parameter.kind is parameter.POSITIONAL_OR_KEYWORD
    ) - {"self"}


def split_client_options(options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Connection options (``security_protocol``, ``ssl_context``, ``sasl_*``, ``client_id``,
    ``request_timeout_ms``...) for each client that takes them: ``producer``, ``consumer``, ``admin``.

    An option no client takes is a mistake worth an early TypeError, not a silent no-op.
    """
    clients = {"producer": AIOKafkaProducer, "consumer": AIOKafkaConsumer, "admin": AIOKafkaAdminClient}
    unknown = [name for name in options if not any(name in _accepted(kind) for kind in clients.values())]
    if unknown:
        raise TypeError(
            f"KafkaBroker got unknown options {sorted(unknown)}; client-specific settings go in "
            "producer_options= or consumer_options="
        )
    _refuse_reserved(options, "producer")
    _refuse_reserved(options, "consumer")
    return {
        role: {name: value for name, value in options.items() if name in _accepted(kind)}
        for role, kind in clients.items()
    }


def check_role_options(options: Mapping[str, Any], role: str) -> dict[str, Any]:
    """``producer_options`` / ``consumer_options``: names the client takes, none that we own."""
    kind = AIOKafkaProducer if role == "producer" else AIOKafkaConsumer
    unknown = sorted(set(options) - _accepted(kind))
    if unknown:
        raise TypeError(f"{role}_options: {kind.__name__} takes no {unknown}")
    _refuse_reserved(options, role)
    return dict(options)


def _refuse_reserved(options: Mapping[str, Any], role: str) -> None:
    reserved = sorted(set(options) & _RESERVED[role])
    if reserved:
        raise TypeError(f"KafkaBroker sets {reserved} of the {role} itself")


@dataclass(frozen=True)
class Options:
    """`KafkaBroker`'s keyword arguments (the same names ``MessageBus.from_url`` takes),
    validated; see the broker's docstring and the package README for what each one changes."""

    num_partitions: int | None
    replication_factor: int | None
    discovery_interval: float
    join_timeout: float
    leave_timeout: float
    producer_options: Mapping[str, Any]
    consumer_options: Mapping[str, Any]
    #: Connection options for every aiokafka client that takes them.
    client_options: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.discovery_interval <= 0:
            raise ValueError("discovery_interval must be positive")
        partitions = self.num_partitions
        if partitions is not None and (
            isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1
        ):
            raise ValueError(f"num_partitions must be a positive int or None, not {partitions!r}")
        split_client_options(self.client_options)
        check_role_options(self.producer_options, "producer")
        check_role_options(self.consumer_options, "consumer")

    def secrets(self) -> tuple[str | None, ...]:
        """The passwords error messages must never quote."""
        return tuple(
            options.get("sasl_plain_password")
            for options in (self.client_options, self.producer_options, self.consumer_options)
        )

    def clients(self, servers: list[str]) -> Clients:
        """What each aiokafka client (and the probe's connection) is given, for ``servers``."""
        common = split_client_options(self.client_options)
        bootstrap = {"bootstrap_servers": servers}
        producer = {**PRODUCER_DEFAULTS, **common["producer"], **self.producer_options}
        # Batches are filled by the adapter (see `amb_kafka._batcher`), which also does the lingering.
        linger = float(producer.pop("linger_ms")) / 1000
        consumer = {**CONSUMER_DEFAULTS, **common["consumer"], **self.consumer_options, **bootstrap}
        overridden = {**common["consumer"], **self.consumer_options}
        reader = {key: value for key, value in consumer.items() if key not in _GROUP_ONLY}
        reader.update({key: value for key, value in FANOUT_DEFAULTS.items() if key not in overridden})
        return Clients(
            admin={**common["admin"], **bootstrap},
            # aiokafka's clients default to PLAIN; its connections do not.
            connection={
                "sasl_mechanism": "PLAIN",
                **{k: v for k, v in common["admin"].items() if k in _CONNECTION_OPTIONS},
            },
            producer={**producer, **bootstrap, "acks": "all", "linger_ms": 0},
            consumer=consumer,
            reader=reader,
            linger=linger,
            max_request_size=int(producer.get("max_request_size", 1024 * 1024)),
            max_batch_size=int(producer["max_batch_size"]),
        )


class Clients(NamedTuple):
    """The options of each client, as `Options.clients` sorted them."""

    admin: dict[str, Any]
    #: The probe's own connection (`aiokafka.conn.create_conn`).
    connection: dict[str, Any]
    producer: dict[str, Any]
    #: A group member's consumer.
    consumer: dict[str, Any]
    #: A consumer outside any group (fan-out readers, reply inboxes, group bookkeeping).
    reader: dict[str, Any]
    #: Seconds the batcher waits for more messages before sending a batch.
    linger: float
    max_request_size: int
    max_batch_size: int
