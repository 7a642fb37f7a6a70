"""Where each broker is expected: its URL variable (``AMB_REDIS_URL``...) or the table's default URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from launcher.broker_table import BROKERS, Broker
from launcher.errors import ServiceError

#: Every broker the launcher knows, in the table's order.
NAMES: tuple[str, ...] = tuple(BROKERS)
#: Hosts the launcher may start a broker on; any other must already be running.
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}


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


def broker(name: str) -> Broker:
    """The table's row for ``name``; ``ServiceError`` for a name it does not have."""
    try:
        return BROKERS[name]
    except KeyError:
        raise ServiceError(f"unknown broker {name!r}; expected one of {', '.join(NAMES)}") from None


def endpoint(name: str) -> Endpoint:
    """Where broker ``name`` is expected, from ``AMB_<NAME>_URL`` or the default."""
    row = broker(name)
    url = os.environ.get(row.url_variable) or row.default_url
    parts = _split(name, url)
    host = parts.hostname or "127.0.0.1"
    try:
        # A URL without a port means the broker's usual one: the port of its default URL.
        port = parts.port or _split(name, row.default_url).port
    except ValueError as exc:
        raise ServiceError(f"{row.url_variable}={url!r}: bad port") from exc
    if port is None:
        raise ServiceError(f"{row.url_variable}={url!r}: no port, and none in the default URL")
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


def _split(name: str, url: str) -> SplitResult:
    if name == "kafka":
        # kafka://host:port[,host2:port2...] or a bare host:port list; the first one counts.
        rest = url.split("://", 1)[1] if "://" in url else url
        first = rest.split(",", 1)[0].split("/", 1)[0]
        return urlsplit("//" + first)
    return urlsplit(url)


def env() -> dict[str, str]:
    """The AMB_*_URL variables the tests should use (overrides are reflected)."""
    return {BROKERS[name].url_variable: endpoint(name).url for name in NAMES}
