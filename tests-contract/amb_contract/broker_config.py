"""What the contract suite needs to know per broker, beyond the public API: how to point the same
scheme at another address, how to read the dead letters an adapter wrote, and the options that
make a dead consumer's messages move on within a test's patience.

This is the suite's only broker-specific code (FastStream's ``tests/brokers/base`` pattern: shared
cases, a small per-broker configuration). Client libraries are imported lazily, so a run against
one broker needs only that broker's client installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from amb_core import MessageBus


@dataclass(frozen=True)
class DeadLetterSeen:
    """One dead letter as the broker keeps it: the bytes as received, why, and after how many
    handler attempts."""

    data: bytes
    reason: str
    attempts: int


@dataclass(frozen=True)
class BrokerConfig:
    scheme: str
    #: The broker is a process at an address other processes reach (the in-memory broker lives
    #: in the test's own process): tests marked ``network`` run only then.
    has_address: bool = True
    #: Adapter options for a group member whose peers must take over quickly when it dies.
    takeover_options: dict[str, Any] = field(default_factory=dict)

    def url_at(self, url: str, host: str, port: int) -> str:
        """``url`` with its address replaced (credentials, path and query kept)."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def speaking_tls(self, url: str) -> tuple[str, dict[str, Any]]:
        """The URL and options of a client that speaks TLS to ``url``'s (plain) port."""
        scheme, _, rest = url.partition("://")
        return f"{scheme}s://{rest}", {}

    def presenting(self, url: str, password: str) -> tuple[str, dict[str, Any]]:
        """The URL and options of a client of ``url`` that presents ``password``: in the URL,
        where the adapter takes credentials there (the broker need not check them)."""
        parts = urlsplit(url)
        netloc = f"{parts.username or 'amb'}:{password}@{parts.hostname}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), {}

    def with_bad_password(self, url: str, password: str) -> str | None:
        """``url`` with a wrong password, or None where the test broker has no authentication."""
        parts = urlsplit(url)
        user = parts.username or ""
        netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    async def dead_letters(self, bus: MessageBus, topic: str, group: str) -> list[DeadLetterSeen]:
        """The dead letters of ``group`` on ``topic`` (a plain topic, not a pattern)."""
        from amb_core import InMemoryBroker

        adapter = bus.adapter
        assert isinstance(adapter, InMemoryBroker)
        seen = []
        for dead in adapter.dead_letters:
            if dead.topic == topic and dead.group == group:
                data = (
                    dead.data
                    if dead.data is not None
                    else (dead.message.model_dump_json().encode() if dead.message else b"")
                )
                seen.append(DeadLetterSeen(data, dead.reason, dead.attempts))
        return seen


class RedisConfig(BrokerConfig):
    def with_bad_password(self, url: str, password: str) -> str | None:
        parts = urlsplit(url)
        netloc = f":{password}@{parts.hostname}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    async def dead_letters(self, bus: MessageBus, topic: str, group: str) -> list[DeadLetterSeen]:
        import redis.asyncio as redis

        client = redis.Redis.from_url(_plain_url(bus))
        try:
            entries = await client.xrange(f"amb:dlq:{topic}:{group}")
        finally:
            await client.aclose()
        seen = []
        for _, fields in entries or []:
            assert fields is not None
            message, reason, attempts = fields[b"message"], fields[b"reason"], fields[b"attempts"]
            assert isinstance(message, bytes) and isinstance(reason, bytes) and isinstance(attempts, bytes)
            seen.append(DeadLetterSeen(message, reason.decode(), int(attempts)))
        return seen


class RabbitMQConfig(BrokerConfig):
    async def dead_letters(self, bus: MessageBus, topic: str, group: str) -> list[DeadLetterSeen]:
        import aio_pika

        connection = await aio_pika.connect(_plain_url(bus))
        seen = []
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue("amb.dlq", durable=True, passive=True)
            # Every unacknowledged message returns to the queue when the channel closes; only
            # this test's are acknowledged (taken out), so other tests' dead letters stay.
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                queue_header = str((message.headers or {}).get("x-amb-queue", ""))
                if message.routing_key == topic and queue_header.startswith(f"amb.group.{group}."):
                    headers = message.headers or {}
                    seen.append(
                        DeadLetterSeen(
                            message.body,
                            str(headers.get("x-amb-reason", "")),
                            int(str(headers.get("x-amb-attempt", 0))),
                        )
                    )
                    await message.ack()
        finally:
            await connection.close()
        return seen


class KafkaConfig(BrokerConfig):
    def speaking_tls(self, url: str) -> tuple[str, dict[str, Any]]:
        import ssl

        return url, {"security_protocol": "SSL", "ssl_context": ssl.create_default_context()}

    def with_bad_password(self, url: str, password: str) -> str | None:
        return None  # the launcher's Kafka has no authentication

    def presenting(self, url: str, password: str) -> tuple[str, dict[str, Any]]:
        # Kafka takes credentials as options only (a URL with them is refused).
        return url, {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "amb",
            "sasl_plain_password": password,
        }

    async def dead_letters(self, bus: MessageBus, topic: str, group: str) -> list[DeadLetterSeen]:
        from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]

        dead_letter_topic = f"_amb.dlq.{topic}"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=_plain_url(bus).removeprefix("kafka://"), enable_auto_commit=False
        )
        await consumer.start()
        seen = []
        try:
            # A fresh metadata request: the consumer's own metadata lists only what it follows.
            metadata = await consumer._client.fetch_all_metadata()
            ids = metadata.partitions_for_topic(dead_letter_topic)
            if not ids:
                return []
            partitions = [TopicPartition(dead_letter_topic, p) for p in ids]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        headers = {key: value.decode() for key, value in record.headers}
                        if headers.get("amb-dlq-group", "").startswith(f"{group}."):
                            seen.append(
                                DeadLetterSeen(
                                    record.value or b"",
                                    headers.get("amb-dlq-reason", ""),
                                    int(headers.get("amb-dlq-attempts", "0")),
                                )
                            )
        finally:
            await consumer.stop()
        return seen


def _plain_url(bus: MessageBus) -> str:
    from amb_contract.suite import URL

    return URL


CONFIGS: dict[str, BrokerConfig] = {
    "memory": BrokerConfig("memory", has_address=False),
    "redis": RedisConfig("redis", takeover_options={"claim_idle": 1.0}),
    "rediss": RedisConfig("rediss", takeover_options={"claim_idle": 1.0}),
    "amqp": RabbitMQConfig("amqp"),
    "amqps": RabbitMQConfig("amqps"),
    "kafka": KafkaConfig("kafka", takeover_options={"consumer_options": {"session_timeout_ms": 6000}}),
}


def config_for(scheme: str) -> BrokerConfig:
    return CONFIGS.get(scheme, BrokerConfig(scheme))
