"""Where the brokers are, whether they answer, and which versions they are (asked of them)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

from harness import REPO_ROOT

#: The brokers of brokers.json (the repository's one table), after the in-memory broker.
_TABLE: dict[str, dict[str, str]] = {
    row["name"]: row
    for row in json.loads((REPO_ROOT / "brokers.json").read_text(encoding="utf-8"))["brokers"]
}
ADAPTERS = ("memory", *_TABLE)
URL_VARIABLES = {name: row["url_variable"] for name, row in _TABLE.items()}
#: Where scripts/services.py starts each broker when its URL variable is not set.
DEFAULT_URLS = {"memory": "memory://", **{name: row["default_url"] for name, row in _TABLE.items()}}
#: The distribution that brings each adapter.
DISTRIBUTIONS = {"memory": "amb-core", **{name: row["distribution"] for name, row in _TABLE.items()}}
#: amb-core, then every adapter's distribution: whose versions a report records.
AMB_DISTRIBUTIONS = tuple(dict.fromkeys(DISTRIBUTIONS.values()))
CHECK_TIMEOUT_S = 10.0


class BrokerUnreachable(RuntimeError):
    pass


def url_for(adapter: str) -> str:
    return os.environ.get(URL_VARIABLES.get(adapter, ""), "") or DEFAULT_URLS[adapter]


def redacted(url: str) -> str:
    """The URL without its password, for reports."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


async def probe(adapter: str, url: str, grace_s: float = 20.0) -> dict[str, Any]:
    """Connect to the broker and ask its version; raise `BrokerUnreachable` if it still does not
    answer after ``grace_s`` seconds (a broker being restarted comes back within that)."""
    if adapter == "memory":
        return {"url": url, "version": "in-process"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while True:
        try:
            info = await asyncio.wait_for(_PROBES[adapter](url), CHECK_TIMEOUT_S)
            break
        except Exception as error:
            if loop.time() < deadline:
                await asyncio.sleep(1.0)
                continue
            raise _unreachable(adapter, url, error) from error
    return {"url": redacted(url), **info}


def _unreachable(adapter: str, url: str, error: BaseException) -> BrokerUnreachable:
    return BrokerUnreachable(
        f"{adapter} at {redacted(url)} is unreachable ({type(error).__name__}: {error}). "
        f"Start it with `python scripts/services.py up {adapter}`, or point {URL_VARIABLES[adapter]} at a running one."
    )


async def _redis(url: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        server = await client.info("server")
    finally:
        await client.aclose()
    return {"version": f"Redis {server['redis_version']}", "source": "INFO server"}


async def _rabbitmq(url: str) -> dict[str, Any]:
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        transport = connection.transport
        properties = dict(transport.connection.server_properties or {}) if transport is not None else {}
    finally:
        await connection.close()
    product, version = _text(properties.get("product", "RabbitMQ")), _text(properties.get("version", "?"))
    return {"version": f"{product} {version}", "source": "AMQP server properties"}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _kafka(url: str) -> dict[str, Any]:
    from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]
    from aiokafka.protocol.admin import ApiVersionRequest  # type: ignore[import-untyped]

    client = AIOKafkaClient(bootstrap_servers=url.split("://", 1)[-1].rstrip("/"))
    await client.bootstrap()
    try:
        request = ApiVersionRequest[1]() if isinstance(ApiVersionRequest, list) else ApiVersionRequest()
        response = await client.send(client.get_random_node(), request)
    finally:
        await client.close()
    apis = {key: (low, high) for key, low, high in response.api_versions}
    produce = apis.get(0, ("?", "?"))
    answer = f"ApiVersions: {len(apis)} APIs, Produce v{produce[0]}-v{produce[1]}"
    jar = _kafka_jar_version()
    return {
        "version": f"Apache Kafka {jar} ({answer})" if jar else f"Kafka ({answer})",
        "source": "ApiVersions request"
        + ("; version from the running broker's kafka_2.13 jar" if jar else ""),
    }


def _kafka_jar_version() -> str | None:
    """The version of the Kafka broker scripts/services.py runs (its jar's name)."""
    libs = REPO_ROOT / ".services" / "kafka" / "libs"
    for jar in sorted(Path(libs).glob("kafka_2.13-*.jar")) if libs.is_dir() else ():
        match = re.fullmatch(r"kafka_2\.13-([0-9][^-]*)\.jar", jar.name)
        if match:
            return match.group(1)
    return None


_PROBES = {"redis": _redis, "rabbitmq": _rabbitmq, "kafka": _kafka}
