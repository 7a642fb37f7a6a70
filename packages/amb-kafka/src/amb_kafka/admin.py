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
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from amb_core.errors import BrokerUnavailableError

logger = logging.getLogger("amb")

_NO_ERROR = 0
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3


class TopicAdmin:
    """Topic housekeeping over one admin connection.

    Topics are created explicitly rather than left to the broker's auto-creation, which
    production clusters usually disable. Partitions and replication default to the broker's
    own ``num.partitions`` and ``default.replication.factor``.
    """

    def __init__(
        self, options: dict[str, Any], num_partitions: int | None, replication_factor: int | None
    ) -> None:
        self._client = AIOKafkaAdminClient(**options)
        self._num_partitions = num_partitions
        self._replication_factor = replication_factor
        self._defaults: tuple[int, int] | None = None
        self._creating: dict[str, asyncio.Task[bool]] = {}

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        for task in self._creating.values():
            task.cancel()
        await self._client.close()

    async def topic_partitions(self) -> dict[str, int]:
        """Every topic of the cluster that is not Kafka's own, with its partition count."""
        cluster = await self._client._client.fetch_all_metadata()
        return {topic: len(cluster.partitions_for_topic(topic) or ()) for topic in cluster.topics()}

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
        default_partitions, replication = await self._topic_defaults()
        new_topic = NewTopic(topic, partitions or default_partitions, replication)
        try:
            response = await self._client.create_topics([new_topic])
        except KafkaError as error:
            raise BrokerUnavailableError(f"could not create Kafka topic {topic!r}: {error}") from error
        for entry in response.topic_errors:
            code, message = entry[1], (entry[2] if len(entry) > 2 else None)
            if code == _TOPIC_ALREADY_EXISTS:
                return False
            if code != _NO_ERROR:
                raise BrokerUnavailableError(
                    f"Kafka refused to create topic {topic!r}: error {code} {message or ''}".rstrip()
                )
        logger.debug("created Kafka topic %s", topic)
        return True

    async def delete(self, topic: str) -> None:
        """Delete ``topic``; one that is already gone is fine."""
        try:
            response = await self._client.delete_topics([topic])
        except KafkaError as error:
            logger.warning("could not delete Kafka topic %s: %s", topic, error)
            return
        for entry in response.topic_error_codes:
            if entry[1] not in (_NO_ERROR, _UNKNOWN_TOPIC):
                logger.warning("Kafka did not delete topic %s: error %s", topic, entry[1])

    async def _topic_defaults(self) -> tuple[int, int]:
        if self._num_partitions is not None and self._replication_factor is not None:
            return self._num_partitions, self._replication_factor
        if self._defaults is None:
            self._defaults = await self._broker_defaults()
        return (
            self._num_partitions or self._defaults[0],
            self._replication_factor or self._defaults[1],
        )

    async def _broker_defaults(self) -> tuple[int, int]:
        """The broker's ``num.partitions`` and ``default.replication.factor`` (1 and at most 3
        when the broker will not say, e.g. without DescribeConfigs permission)."""
        brokers = self._client._client.cluster.brokers()
        fallback = (1, min(3, max(1, len(brokers))))
        if not brokers:
            return fallback
        broker = str(min(node.nodeId for node in brokers))
        wanted = {"num.partitions": None, "default.replication.factor": None}
        try:
            [response] = await self._client.describe_configs(
                [ConfigResource(ConfigResourceType.BROKER, broker, wanted)]
            )
            values = {entry[0]: entry[1] for resource in response.resources for entry in resource[4]}
            return int(values["num.partitions"]), int(values["default.replication.factor"])
        except (KafkaError, KeyError, ValueError, IndexError, TypeError) as error:
            logger.debug("could not read the broker's topic defaults (%s); using %s", error, fallback)
            return fallback
