"""`KafkaBroker`: the AMB adapter for Apache Kafka, on aiokafka."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

from amb_core.adapter import BrokerAdapter, Capabilities
from amb_core.backoff import backoff_delays
from amb_core.errors import BrokerUnavailableError
from amb_core.ids import new_id
from amb_core.message import Message
from amb_core.subscription import Subscription
from amb_core.topics import INBOX_PREFIX
from amb_core.wire import encode
from amb_kafka import fanout, groups
from amb_kafka.admin import TopicAdmin
from amb_kafka.batcher import Batcher
from amb_kafka.config import bootstrap_servers, check_role_options, split_client_options
from amb_kafka.deadletter import DeadLetters
from amb_kafka.fanout import FanoutReader
from amb_kafka.groups import GroupMember

logger = logging.getLogger("amb")

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


class KafkaBroker(BrokerAdapter):
    """AMB on Apache Kafka.

    ``KafkaBroker("localhost:9092")``, ``KafkaBroker(["h1:9092", "h2:9092"])`` or, through the
    bus, ``MessageBus.from_url("kafka://h1:9092,h2:9092")``.

    Options:

    - ``max_attempts`` (3): handler calls a grouped message gets before it is dead-lettered to
      ``_amb.dlq.<topic>``.
    - ``num_partitions`` / ``replication_factor`` (broker defaults): for topics the adapter creates.
    - ``discovery_interval`` (1.0 s): how often wildcard subscriptions look for new topics
      (topics created by this process are noticed at once).
    - ``join_timeout`` (60 s): longest wait for a grouped ``subscribe`` to get its partitions.
    - ``leave_timeout`` (10 s): how long a leaving group member waits for its running handlers,
      so their offsets get committed, before it leaves the group.
    - ``producer_options`` / ``consumer_options``: passed to `AIOKafkaProducer` / `AIOKafkaConsumer`.
    - anything else (``security_protocol``, ``ssl_context``, ``sasl_mechanism``,
      ``sasl_plain_username``, ``sasl_plain_password``, ``client_id``, ``request_timeout_ms``...)
      goes to every aiokafka client that takes it.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        priority=True, survives_restart=True, redelivers_failed=True
    )

    def __init__(
        self,
        bootstrap: str | Sequence[str] = "localhost:9092",
        *,
        max_attempts: int = 3,
        num_partitions: int | None = None,
        replication_factor: int | None = None,
        discovery_interval: float = 1.0,
        join_timeout: float = 60.0,
        leave_timeout: float = 10.0,
        producer_options: Mapping[str, Any] | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        **client_options: Any,
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive int, not {max_attempts!r}")
        if discovery_interval <= 0:
            raise ValueError("discovery_interval must be positive")
        self.bootstrap_servers = bootstrap_servers(bootstrap)
        self.max_attempts = max_attempts
        self._discovery_interval = discovery_interval
        self._join_timeout = join_timeout
        self._leave_timeout = leave_timeout
        self._num_partitions = num_partitions
        self._replication_factor = replication_factor
        common = split_client_options(client_options)
        servers = {"bootstrap_servers": self.bootstrap_servers}
        self._admin_options = {**common["admin"], **servers}
        producer = {
            **PRODUCER_DEFAULTS,
            **common["producer"],
            **check_role_options(producer_options or {}, "producer"),
        }
        # Batches are filled by this adapter (see `Batcher`), which also does the lingering.
        self._linger = float(producer.pop("linger_ms")) / 1000
        self._max_request_size = int(producer.get("max_request_size", 1024 * 1024))
        self._producer_options = {**producer, **servers, "acks": "all", "linger_ms": 0}
        self._consumer_overrides = {**common["consumer"], **(consumer_options or {})}
        self._consumer_options = {
            **CONSUMER_DEFAULTS,
            **common["consumer"],
            **check_role_options(consumer_options or {}, "consumer"),
            **servers,
        }
        #: The record key: one publisher's messages to a topic share a partition, so they keep
        #: their order.
        self._key = new_id().encode()
        self._producer: Any = None
        self._admin: TopicAdmin | None = None
        self._batcher: Batcher | None = None
        self._opening: dict[str, asyncio.Future[bool]] = {}
        self._revival: asyncio.Future[None] | None = None
        self._fanout: FanoutReader | None = None
        self._inbox: FanoutReader | None = None
        self._members: dict[str, GroupMember] = {}
        self._leaving: set[asyncio.Task[None]] = set()
        self._dead_letters = DeadLetters(self._send_record)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KafkaBroker:
        """``kafka://host:port[,host:port...]``."""
        return cls(bootstrap_servers(url), **options)

    @property
    def record_key(self) -> bytes:
        """The key of every record this adapter publishes (see the README's wire format)."""
        return self._key

    def __repr__(self) -> str:
        return f"<KafkaBroker {','.join(self.bootstrap_servers)}>"

    # ---------------------------------------------------------------- connection

    async def connect(self) -> None:
        admin = TopicAdmin(self._admin_options, self._num_partitions, self._replication_factor)
        producer = AIOKafkaProducer(**self._producer_options)
        try:
            await admin.start()
            await producer.start()
        except KafkaError as error:
            await _quietly(producer.stop())
            await _quietly(admin.close())
            raise BrokerUnavailableError(
                f"could not connect to Kafka at {','.join(self.bootstrap_servers)}: {error}"
            ) from error
        self._admin = admin
        self._use_producer(producer)

    def _use_producer(self, producer: Any) -> None:
        self._producer = producer
        assert self._admin is not None
        self._batcher = Batcher(producer, self._key, self._linger, self._max_request_size, self._admin.exists)
        # aiokafka's producer is done for once its sender task ends (a fatal error of the
        # idempotent producer, say); a new one takes over. The watch costs nothing per message.
        sender = getattr(getattr(producer, "_sender", None), "_sender_task", None)
        if isinstance(sender, asyncio.Future):
            sender.add_done_callback(lambda task: self._producer_ended(producer, task))

    def _producer_ended(self, producer: Any, task: asyncio.Future[Any]) -> None:
        if producer is not self._producer or task.cancelled() or task.exception() is None:
            return  # stopped on purpose
        logger.error("the Kafka producer failed (%s); starting a new one", task.exception())
        self._revival = asyncio.ensure_future(self._revive(producer))

    async def _revive(self, dead: Any) -> None:
        await _quietly(dead.stop())
        for delay in backoff_delays():
            if self._producer is not dead:
                return  # disconnected meanwhile
            producer = AIOKafkaProducer(**self._producer_options)
            try:
                await producer.start()
            except KafkaError as error:
                logger.warning("could not start a new Kafka producer, retrying: %s", error)
                await _quietly(producer.stop())
                await asyncio.sleep(delay)
                continue
            if self._producer is dead:
                self._use_producer(producer)
            else:
                await _quietly(producer.stop())
            return

    async def disconnect(self) -> None:
        members, self._members = list(self._members.values()), {}
        for member in members:
            self._leave(member)
        if self._leaving:
            await asyncio.wait(self._leaving, timeout=self._leave_timeout + 5)
        for reader in (self._fanout, self._inbox):
            if reader is not None:
                await reader.close()
        self._fanout = self._inbox = None
        if self._batcher is not None:
            await self._batcher.flush()
        self._batcher = None
        if self._revival is not None:
            self._revival.cancel()
            self._revival = None
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            # stop() sends what fire-and-forget publishes left in the producer's buffer first.
            await _quietly(producer.stop())
        if admin is not None:
            await _quietly(admin.close())

    def _connected(self) -> tuple[Any, TopicAdmin]:
        if self._producer is None or self._admin is None:
            raise BrokerUnavailableError("the Kafka adapter is not connected")
        return self._producer, self._admin

    # ---------------------------------------------------------------- publishing

    async def publish(self, message: Message, *, confirm: bool) -> None:
        topic = message.topic
        batcher = self._batcher
        if batcher is None or not batcher.knows(topic):
            if not await self._open_topic(topic, message.id if confirm else None):
                return
            batcher = self._batcher
            assert batcher is not None
        waiting = batcher.send(topic, encode(message), message.id, confirm)
        if waiting is not None:
            await waiting

    async def publish_raw(self, topic: str, data: bytes) -> None:
        """Write ``data`` to ``topic`` as is (a foreign producer's record), confirmed."""
        await self._send_record(topic, data, None, [])

    async def _open_topic(self, topic: str, confirmed_id: str | None) -> bool:
        """Get ready to publish to ``topic``: create it if needed and pick this publisher's
        partition. False for a reply whose inbox is gone (its bus closed): it is dropped.
        Concurrent first publishes to one topic share the work."""
        opening = self._opening.get(topic)
        if opening is None:
            opening = asyncio.ensure_future(self._open_new_topic(topic, confirmed_id))
            self._opening[topic] = opening
            opening.add_done_callback(lambda _: self._opening.pop(topic, None))
        return await asyncio.shield(opening)

    async def _open_new_topic(self, topic: str, confirmed_id: str | None) -> bool:
        producer, admin = self._connected()
        if topic.startswith(INBOX_PREFIX):
            if not await self._find_inbox(producer, admin, topic):
                return False
        elif producer.client.cluster.partitions_for_topic(topic) is None:
            created = await admin.create(topic)
            if created:
                _topic_created()
                if confirmed_id is not None:
                    logger.warning(
                        "message %s went to %s, a topic that did not exist: no subscription to it "
                        "existed (wildcard subscriptions still find it)",
                        confirmed_id,
                        topic,
                    )
        try:
            partitions = sorted(await producer.partitions_for(topic))
        except KafkaError as error:
            raise BrokerUnavailableError(f"no Kafka metadata for topic {topic}: {error}") from error
        inbox = topic.startswith(INBOX_PREFIX)
        if inbox:
            producer.client._topics.discard(topic)
        # What aiokafka's default partitioner does with the key, once per topic.
        partition: int = partitions[(murmur2(self._key) & 0x7FFFFFFF) % len(partitions)]
        assert self._batcher is not None
        self._batcher.add_topic(topic, partition, untracked=inbox)
        return True

    async def _find_inbox(self, producer: Any, admin: TopicAdmin, topic: str) -> bool:
        """Whether the requesting bus's inbox still exists. It is never created here: one that
        is gone belongs to a bus that closed."""
        if producer.client.cluster.partitions_for_topic(topic) is not None or await admin.exists(topic):
            return True
        logger.debug("dropped a reply to %s: that bus has closed", topic)
        return False

    async def _send_record(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        producer, admin = self._connected()
        if producer.client.cluster.partitions_for_topic(topic) is None and await admin.create(topic):
            _topic_created()
        try:
            future = await producer.send(topic, value, key=key, headers=headers)
            await future
        except KafkaError as error:
            raise BrokerUnavailableError(f"Kafka did not confirm a record on {topic}: {error}") from error

    # ---------------------------------------------------------------- subscribing

    async def subscribe(self, subscription: Subscription) -> None:
        _, admin = self._connected()
        if subscription.is_inbox:
            if self._inbox is None:
                self._inbox = self._reader("inbox", admin)
            # One partition: replies need no parallelism, and the responder need not look it up.
            await self._inbox.add(subscription, partitions=1)
        elif subscription.group is None:
            if self._fanout is None:
                self._fanout = self._reader("fan-out", admin)
            await self._fanout.add(subscription)
        else:
            member = GroupMember(
                subscription,
                self._consumer_options,
                admin,
                self._dead_letters,
                max_attempts=self.max_attempts,
                join_timeout=self._join_timeout,
                discovery_interval=self._discovery_interval,
            )
            await member.start()
            self._members[subscription.id] = member

    def _reader(self, name: str, admin: TopicAdmin) -> FanoutReader:
        async def create(topic: str, partitions: int | None) -> None:
            if await admin.create(topic, partitions=partitions):
                _topic_created()

        options = {key: value for key, value in self._consumer_options.items() if key not in _GROUP_ONLY}
        for key, value in FANOUT_DEFAULTS.items():
            if key not in self._consumer_overrides:
                options[key] = value
        return FanoutReader(name, options, admin, self._discovery_interval, create)

    async def unsubscribe(self, subscription: Subscription) -> None:
        if subscription.is_inbox:
            if self._inbox is not None:
                # The consumer goes first: while it tracks the topic its metadata refreshes
                # could have the broker auto-create the topic again.
                await self._inbox.remove(subscription)
                if self._admin is not None:
                    await self._admin.delete(subscription.pattern)
        elif subscription.group is None:
            if self._fanout is not None:
                await self._fanout.remove(subscription)
        else:
            member = self._members.pop(subscription.id, None)
            if member is not None:
                self._leave(member)

    def _leave(self, member: GroupMember) -> None:
        # Stop feeding now; leave the group once the handlers in flight are done, so their
        # offsets are committed rather than read again by the next member.
        member.stop_reading()
        task = asyncio.ensure_future(member.stop(self._leave_timeout))
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)


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


def _topic_created() -> None:
    fanout.topic_created()
    groups.topic_created()


async def _quietly(closing: Any) -> None:
    try:
        await closing
    except Exception as error:
        logger.debug("while closing a Kafka client: %s", error)
