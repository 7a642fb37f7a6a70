"""Creating, finding and deleting topics (the Kafka admin API), shared by one adapter's parts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.errors import for_code  # type: ignore[import-untyped]

from amb_core.adapter import backoff_delays
from amb_kafka._errors import MAPPED, Boundary

logger = logging.getLogger("amb.kafka")

_NO_ERROR = 0
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
#: What a describe_configs request may end in when the broker will not (or cannot) say.
_DESCRIBE_FAILED: tuple[type[BaseException], ...] = (*MAPPED, ValueError, IndexError, TypeError)
#: Partitions of the topics the adapter creates, unless told otherwise (``num_partitions``): a
#: group spreads over at most as many members as its topic has partitions, and a stock broker's
#: ``num.partitions`` is 1, which would hand every message to one member. Eight lets a group of
#: up to 8 share the work (2, 4 or 8 members evenly) at little cost to a single broker.
DEFAULT_NUM_PARTITIONS = 8
#: Kafka's own default of ``message.max.bytes`` (1 MiB plus the 12 bytes of a log entry header).
DEFAULT_MESSAGE_MAX_BYTES = 1_048_588


class BrokerSettings:
    """What the adapter reads of the broker's configuration once, at connect."""

    __slots__ = ("message_max_bytes", "num_partitions", "replication_factor")

    def __init__(self, num_partitions: int, replication_factor: int, message_max_bytes: int) -> None:
        self.num_partitions = num_partitions
        self.replication_factor = replication_factor
        #: The largest record batch the broker takes (``message.max.bytes``).
        self.message_max_bytes = message_max_bytes


class TopicAdmin:
    """Topic housekeeping over one admin connection.

    Topics are created explicitly rather than left to the broker's auto-creation, which
    production clusters usually disable. Partitions and replication default to the broker's
    ``num_partitions`` (None: the broker's ``num.partitions``) and ``default.replication.factor``.
    """

    def __init__(
        self,
        options: dict[str, Any],
        num_partitions: int | None,
        replication_factor: int | None,
        boundary: Boundary,
    ) -> None:
        self._client = AIOKafkaAdminClient(**options)
        self._num_partitions = num_partitions
        self._replication_factor = replication_factor
        self._boundary = boundary
        self._settings: BrokerSettings | None = None
        self._creating: dict[str, asyncio.Task[bool]] = {}

    @property
    def client_api(self) -> Any:
        """The `AIOKafkaAdminClient` itself (consumer groups: amb_kafka._lifetime)."""
        return self._client

    @property
    def client(self) -> Any:
        """The admin's `AIOKafkaClient` (to watch its connections)."""
        return self._client._client

    async def start(self) -> None:
        """Connect and read the broker's settings (`settings`)."""
        with self._boundary("connecting"):
            await self._client.start()
        self._settings = await self._broker_settings()

    @property
    def settings(self) -> BrokerSettings:
        assert self._settings is not None, "start() first"
        return self._settings

    async def close(self) -> None:
        for task in self._creating.values():
            task.cancel()
        await self._client.close()

    async def topic_partitions(self) -> dict[str, int]:
        """Every topic of the cluster that is not Kafka's own, with its partition count."""
        with self._boundary("listing topics"):
            cluster = await self._client._client.fetch_all_metadata()
        return {topic: len(cluster.partitions_for_topic(topic) or ()) for topic in cluster.topics()}

    async def partition_count(self, topic: str) -> int:
        """The partition count of ``topic`` (which exists), waiting out the moment a new topic
        has no metadata yet."""
        for delay in backoff_delays(0.02, 0.5):
            count = (await self.topic_partitions()).get(topic, 0)
            if count:
                return count
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def exists(self, topic: str) -> bool:
        """Whether ``topic`` exists, asked without letting the broker auto-create it."""
        return topic in await self.topic_partitions()

    async def create(self, topic: str, *, partitions: int | None = None) -> bool:
        """Make sure ``topic`` exists; True if this call created it. Concurrent calls for one
        topic share a single request."""
        task = self._creating.get(topic)
        if task is None:
            task = asyncio.ensure_future(self._create(topic, partitions))
            self._creating[topic] = task
            task.add_done_callback(lambda _: self._creating.pop(topic, None))
        return await asyncio.shield(task)

    async def _create(self, topic: str, partitions: int | None) -> bool:
        settings = self.settings
        new_topic = NewTopic(
            topic,
            partitions or self._num_partitions or settings.num_partitions,
            self._replication_factor or settings.replication_factor,
        )
        doing = f"creating topic {topic!r}"
        with self._boundary(doing):
            response = await self._client.create_topics([new_topic])
        for entry in response.topic_errors:
            code, message = entry[1], (entry[2] if len(entry) > 2 else None)
            if code == _TOPIC_ALREADY_EXISTS:
                return False
            if code != _NO_ERROR:
                raise self._boundary.error(for_code(code)(message or ""), doing)
        logger.debug("created Kafka topic %s", topic)
        return True

    async def delete(self, topic: str) -> None:
        """Delete ``topic``; one that is already gone is fine."""
        try:
            with self._boundary(f"deleting topic {topic!r}"):
                response = await self._client.delete_topics([topic])
        except MAPPED as error:
            logger.warning("%s", error)
            return
        for entry in response.topic_error_codes:
            if entry[1] not in (_NO_ERROR, _UNKNOWN_TOPIC):
                logger.warning("Kafka did not delete topic %s: error %s", topic, entry[1])

    async def max_message_bytes(self, topic: str) -> int | None:
        """The topic's ``max.message.bytes``; None when the broker will not say."""
        values = await self._describe(ConfigResourceType.TOPIC, topic, "max.message.bytes")
        try:
            return int(values["max.message.bytes"])
        except (KeyError, ValueError, TypeError):
            return None

    async def _broker_settings(self) -> BrokerSettings:
        """The broker's ``num.partitions``, ``default.replication.factor`` and
        ``message.max.bytes`` (Kafka's defaults, with a replication factor of at most 3, when
        the broker will not say, e.g. without DescribeConfigs permission)."""
        brokers = self._client._client.cluster.brokers()
        fallback = BrokerSettings(1, min(3, max(1, len(brokers))), DEFAULT_MESSAGE_MAX_BYTES)
        if not brokers:
            return fallback
        broker = str(min(node.nodeId for node in brokers))
        values = await self._describe(
            ConfigResourceType.BROKER,
            broker,
            "num.partitions",
            "default.replication.factor",
            "message.max.bytes",
        )

        def read(name: str, default: int) -> int:
            try:
                return int(values[name])
            except (KeyError, ValueError, TypeError):
                logger.debug("the broker did not say its %s; using %s", name, default)
                return default

        return BrokerSettings(
            read("num.partitions", fallback.num_partitions),
            read("default.replication.factor", fallback.replication_factor),
            read("message.max.bytes", fallback.message_max_bytes),
        )

    async def _describe(self, kind: Any, name: str, *configs: str) -> dict[str, Any]:
        """The values of ``configs`` of one resource; what the broker will not say is missing."""
        try:
            [response] = await self._client.describe_configs(
                [ConfigResource(kind, name, dict.fromkeys(configs))]
            )
            return {entry[0]: entry[1] for resource in response.resources for entry in resource[4]}
        except _DESCRIBE_FAILED as error:
            logger.debug("could not describe %s %s: %s", kind, name, error)
            return {}
