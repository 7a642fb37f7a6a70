"""Reading the adapter's URL and sorting its options into what each aiokafka client takes."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

SCHEME = "kafka://"
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
