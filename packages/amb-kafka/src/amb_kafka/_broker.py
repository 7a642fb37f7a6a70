"""`KafkaBroker`: the AMB adapter for Apache Kafka, on aiokafka."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import anyio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.conn import collect_hosts, create_conn  # type: ignore[import-untyped]
from aiokafka.errors import KafkaConnectionError, ProducerClosed  # type: ignore[import-untyped]
from aiokafka.protocol.metadata import MetadataRequest  # type: ignore[import-untyped]
from aiokafka.record.default_records import DefaultRecordBatchBuilder  # type: ignore[import-untyped]

from amb_core.adapter import (
    INBOX_PREFIX,
    RESERVED_PREFIX,
    AMBError,
    BrokerAdapter,
    BrokerRefusedError,
    BrokerUnavailableError,
    Capabilities,
    GroupInfo,
    Link,
    Message,
    Policy,
    Subscription,
    TaskSet,
    backoff_delays,
    keep_reconnecting,
    throttled,
)
from amb_kafka import _fanout, _group_consumer
from amb_kafka._admin import DEFAULT_MESSAGE_MAX_BYTES, DEFAULT_NUM_PARTITIONS, TopicAdmin
from amb_kafka._batcher import Batcher, Topic
from amb_kafka._dead_letters import DeadLetters
from amb_kafka._errors import Boundary, kind
from amb_kafka._fanout import FanoutReader
from amb_kafka._group_consumer import GroupConsumer
from amb_kafka._health import Health
from amb_kafka._lifetime import Groups
from amb_kafka._options import Options, bootstrap_servers
from amb_kafka._reply_inbox import ReplyInbox

logger = logging.getLogger("amb.kafka")

_Reader = TypeVar("_Reader", bound=FanoutReader)


class KafkaBroker(BrokerAdapter):
    """AMB on Apache Kafka.

    ``KafkaBroker("localhost:9092")``, ``KafkaBroker(["h1:9092", "h2:9092"])`` or, through the
    bus, ``MessageBus.from_url("kafka://h1:9092,h2:9092")``.

    Options:

    - the failure policy every adapter takes (`amb_core.Policy`): ``max_attempts`` (3),
      ``connect_timeout`` (10 s), ``outage_timeout`` (30 s), ``outage_buffer`` (10,000).
    - ``num_partitions`` (`DEFAULT_NUM_PARTITIONS`, 8; None: the broker's ``num.partitions``) and
      ``replication_factor`` (the broker's default): for topics the adapter creates. A group
      shares a topic's work over at most as many members as it has partitions.
    - ``discovery_interval`` (1.0 s): how often wildcard subscriptions look for new topics
      (topics created by this process are noticed at once).
    - ``join_timeout`` (60 s): longest wait for a grouped ``subscribe`` to get its partitions.
    - ``leave_timeout`` (10 s): how long a leaving group member waits for its running handlers,
      so their offsets get committed, before it leaves the group.
    - ``producer_options`` / ``consumer_options``: passed to `AIOKafkaProducer` / `AIOKafkaConsumer`.
    - anything else (``security_protocol``, ``ssl_context``, ``sasl_mechanism``,
      ``sasl_plain_username``, ``sasl_plain_password``, ``client_id``, ``request_timeout_ms``...)
      goes to every aiokafka client that takes it.

    `max_message_size` is the largest encoded envelope a publish may have: the broker's
    ``message.max.bytes`` (read at connect; Kafka's default of 1 MiB until then) or the
    producer's ``max_request_size`` if smaller, less the record batch's own bytes. A topic whose
    ``max.message.bytes`` is lower is held to that when this adapter first publishes to it.
    """

    #: Keyless messages are spread over a topic's partitions (so that a group shares them), so
    #: only a key keeps order; a key's messages are one partition's, which one member of a
    #: group reads at a time.
    capabilities: ClassVar[Capabilities] = Capabilities(
        priority=True,
        survives_restart=True,
        redelivers_failed=True,
        keyless_order=False,
        group_key_order=True,
    )

    def __init__(
        self,
        bootstrap: str | Sequence[str] = "localhost:9092",
        *,
        num_partitions: int | None = DEFAULT_NUM_PARTITIONS,
        replication_factor: int | None = None,
        discovery_interval: float = 1.0,
        join_timeout: float = 60.0,
        leave_timeout: float = 10.0,
        producer_options: Mapping[str, Any] | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        **client_options: Any,
    ) -> None:
        super().__init__(
            **{name: client_options.pop(name) for name in list(client_options) if name in Policy.NAMES}
        )
        options = self._options = Options(
            num_partitions=num_partitions,
            replication_factor=replication_factor,
            discovery_interval=discovery_interval,
            join_timeout=join_timeout,
            leave_timeout=leave_timeout,
            producer_options=dict(producer_options or {}),
            consumer_options=dict(consumer_options or {}),
            client_options=client_options,
        )
        self.bootstrap_servers = bootstrap_servers(bootstrap)
        clients = options.clients(self.bootstrap_servers)
        self._admin_options = clients.admin
        self._connection_options = clients.connection
        self._producer_options = clients.producer
        self._consumer_options = clients.consumer
        self._reader_options = clients.reader
        self._linger = clients.linger
        self._max_request_size = clients.max_request_size
        self._max_batch_size = clients.max_batch_size
        name = f"Kafka at {','.join(self.bootstrap_servers)}"
        self._boundary = Boundary(name, options.secrets())
        self._link = self.link = Link(name)
        self._health = Health(self._link, self._probe_quietly)
        #: Bytes a record batch of one record without a key adds to the envelope (batch header,
        #: record framing), as aiokafka counts them, plus the value's length prefix at its largest.
        #: A message's key takes its length from the room left (`Batcher.send`).
        self._overhead = int(DefaultRecordBatchBuilder.estimate_size_in_bytes(None, b"", [])) + 4
        self._broker_max = DEFAULT_MESSAGE_MAX_BYTES
        self.max_message_size: int = self._fits(DEFAULT_MESSAGE_MAX_BYTES)
        self._producer: Any = None
        self._admin: TopicAdmin | None = None
        self._batcher: Batcher | None = None
        self._opening: dict[str, asyncio.Future[Topic | None]] = {}
        self._renewal: asyncio.Task[None] | None = None
        #: Replacing the producer, stopping a replaced one, re-reading a topic's size limit.
        self._background = TaskSet(self._boundary.name)
        self._fanout: FanoutReader | None = None
        self._inbox: ReplyInbox | None = None
        self._members: dict[str, GroupConsumer] = {}
        self._groups: Groups | None = None
        #: Group members leaving (once their handlers are done).
        self._leaving = TaskSet(self._boundary.name)
        self._dead_letters = DeadLetters(self._send_record, self._link)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KafkaBroker:
        """``kafka://host:port[,host:port...]``."""
        return cls(bootstrap_servers(url), **options)

    def describe(self) -> str:
        return self._boundary.name

    def __repr__(self) -> str:
        return f"<KafkaBroker {','.join(self.bootstrap_servers)}>"

    def _fits(self, message_max_bytes: int) -> int:
        """The largest envelope a record batch of at most ``message_max_bytes`` can carry."""
        return min(self._max_request_size, message_max_bytes) - self._overhead

    # ---------------------------------------------------------------- connection

    async def connect(self) -> None:
        # Our own connection first: it says why the broker cannot be had (refused credentials,
        # another protocol on the port), where aiokafka's bootstrap only logs it.
        await self._probe("connecting")
        admin = TopicAdmin(
            self._admin_options,
            self._options.num_partitions,
            self._options.replication_factor,
            self._boundary,
        )
        self._health.watch(admin.client)
        producer = None
        try:
            await admin.start()
            self._broker_max = admin.settings.message_max_bytes
            self.max_message_size = self._fits(self._broker_max)
            producer = await self._start_producer()
        except BaseException:
            # The bus cancels connect() after connect_timeout: nothing may stay open.
            with anyio.CancelScope(shield=True):
                if producer is not None:
                    await _quietly(producer.stop())
                await _quietly(admin.close())
            raise
        self._admin = admin
        self._producer = producer
        self._groups = Groups(admin.client_api, self._reader_options, self._boundary)
        self._batcher = Batcher(
            producer,
            self._linger,
            admin.exists,
            self._health,
            self._boundary,
            self._renew,
            self._relearn_limit,
        )
        self._health.open()

    async def _start_producer(self) -> Any:
        producer = AIOKafkaProducer(**self._producer_options)
        self._health.watch(producer.client)
        try:
            with self._boundary("starting the producer"):
                await producer.start()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _quietly(producer.stop())
            raise
        # aiokafka's producer is done for once its sender task ends (a fatal error of the
        # idempotent producer, say); a new one takes over. The watch costs nothing per message.
        sender = getattr(getattr(producer, "_sender", None), "_sender_task", None)
        if isinstance(sender, asyncio.Future):
            sender.add_done_callback(lambda task: self._producer_ended(producer, task))
        return producer

    async def _probe(self, doing: str) -> None:
        """Raise unless a bootstrap server answers a metadata request on a connection of our
        own, within ``connect_timeout``: `BrokerRefusedError` if it refuses us,
        `BrokerUnavailableError` otherwise."""
        failures: list[BaseException] = []
        for host, port, _ in collect_hosts(self.bootstrap_servers):
            timeout = self.policy.connect_timeout
            try:
                await asyncio.wait_for(self._ask(host, port), timeout)
                return
            except asyncio.TimeoutError:
                failures.append(KafkaConnectionError(f"{host}:{port} did not answer within {timeout} s"))
            except Exception as error:  # the boundary sorts them out below
                failures.append(error)
        refused = [failure for failure in failures if kind(failure) is BrokerRefusedError]
        raise self._boundary.error(refused[0] if refused else failures[-1], doing)

    async def _probe_quietly(self) -> None:
        try:
            await self._probe("probing")
        except AMBError as error:
            # Link's lines name the broker already.
            raise type(error)(str(error).removeprefix(f"{self._boundary.name}: probing: ")) from None

    async def _ask(self, host: str, port: int) -> None:
        conn = await create_conn(host, port, **self._connection_options)
        try:
            response = await conn.send(MetadataRequest([]))
            if not response.brokers:
                raise KafkaConnectionError("the broker sent metadata without brokers")
        finally:
            conn.close()

    def _producer_ended(self, producer: Any, task: asyncio.Future[Any]) -> None:
        if producer is not self._producer or task.cancelled() or task.exception() is None:
            return  # stopped on purpose
        self._renew(f"the producer failed: {self._boundary.reason(task.exception())}")  # type: ignore[arg-type]

    def _renew(self, reason: str) -> None:
        """The producer cannot go on: replace it (one replacement at a time). The batcher sends
        what the old one had not settled again through the new one."""
        if self._renewal is not None or self._producer is None or self._batcher is None:
            return
        self._batcher.pause()
        self._renewal = self._background.start(self._replace_producer(reason))

    async def _replace_producer(self, reason: str) -> None:
        old = self._producer
        if self._link.up:
            throttled(
                logger, "kafka-producer", "%s: replacing the producer (%s)", self._boundary.name, reason
            )
        else:  # part of recovering from an outage the link has told already
            logger.debug("%s: replacing the producer (%s)", self._boundary.name, reason)
        try:
            new = await keep_reconnecting(
                self._start_producer_when_up,
                retry_on=AMBError,
                on_failure=self._producer_not_started,
                delays=self._producer_pauses(),
            )
            if self._producer is not old or self._batcher is None:  # disconnected meanwhile
                self._retire(new)
                return
            self._producer = new
            self._batcher.switch(new)
        finally:
            self._renewal = None
        self._retire(old)

    async def _start_producer_when_up(self) -> Any:
        await self._link.wait_up(None)  # at once while the broker is reachable
        return await self._start_producer()

    def _producer_not_started(self, error: BaseException) -> None:
        logger.debug("%s: could not start a new producer yet: %s", self._boundary.name, error)
        if self._link.up:
            self._health.suspect("could not start a producer")

    def _producer_pauses(self) -> Iterator[float]:
        """The pauses before each attempt to start a producer: none before the first, then
        `backoff_delays` while the broker is reachable (it refused this producer), none while
        it is not (the attempt waits for it)."""
        yield 0.0
        delays = backoff_delays()
        while True:
            yield next(delays) if self._link.up else 0.0

    def _relearn_limit(self, topic: str) -> None:
        """The broker refused a batch of ``topic`` as too large: its limit changed since the
        topic was opened. Read it again, so that the next ones are refused before sending."""
        self._background.start(self._read_limit(topic))

    async def _read_limit(self, topic: str) -> None:
        if self._admin is None or self._batcher is None:
            return
        topic_max = await self._admin.max_message_bytes(topic)
        route = self._batcher.topics.get(topic)
        if route is not None and topic_max is not None:
            batch_max = min(self._broker_max, topic_max, self._max_request_size)
            limit = self._fits(batch_max)
            route.set_limit(limit, min(self._max_batch_size, batch_max))
            logger.debug("%s: %s now takes envelopes of up to %d bytes", self._boundary.name, topic, limit)

    def _retire(self, producer: Any) -> None:
        """Stop ``producer`` in the background, without waiting for what it had not settled
        (the batcher has sent that again through its successor, or logged it)."""
        self._background.start(_abandon(producer))

    async def disconnect(self) -> None:
        members, self._members = list(self._members.values()), {}
        for member in members:
            self._leave(member)
        await self._leaving.wait(self._options.leave_timeout + 5)
        for reader in (self._fanout, self._inbox):
            if reader is not None:
                await reader.close()
        self._fanout = self._inbox = None
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            renewal.cancel()
            await asyncio.gather(renewal, return_exceptions=True)
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            # Unreachable: nothing will be confirmed, so what is unsent is logged at once.
            await batcher.close(self.policy.outage_timeout if self._link.up else 0)
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            # Anything the producer still holds was given up on (and logged) by the batcher:
            # stop() must not wait for a broker that is gone.
            await _abandon(producer)
        groups, self._groups = self._groups, None
        if groups is not None:
            await _quietly(groups.close())
        if admin is not None:
            await _quietly(admin.close())
        await self._background.close(self._options.leave_timeout)
        await self._health.close()

    def _connected(self) -> tuple[Any, TopicAdmin]:
        if self._producer is None or self._admin is None:
            raise BrokerUnavailableError(f"{self._boundary.name}: the adapter is not connected")
        return self._producer, self._admin

    # ---------------------------------------------------------------- publishing

    async def publish(self, message: Message, *, confirm: bool) -> None:
        batcher = self._batcher
        if batcher is None:
            raise BrokerUnavailableError(f"{self._boundary.name}: the adapter is not connected")
        route = batcher.topics.get(message.topic)
        if route is None:
            route = await self._open_topic(message.topic, message.id if confirm else None)
            if route is None:
                return
        waiting = batcher.send(route, message, confirm)
        if waiting is not None:
            await waiting

    async def publish_raw(self, topic: str, data: bytes) -> None:
        """Write ``data`` to ``topic`` as is (a foreign producer's record), confirmed."""
        await self._send_record(topic, data, None, [])

    async def _open_topic(self, topic: str, confirmed_id: str | None) -> Topic | None:
        """Get ready to publish to ``topic``: create it if needed, learn its size limit and its
        partitions. None for a reply whose inbox is gone (its bus closed): it is
        dropped. Concurrent first publishes to one topic share the work; if the broker is lost
        meanwhile, they raise `BrokerUnavailableError` at once (the bus keeps the message)."""
        opening = self._opening.get(topic)
        if opening is None:
            opening = asyncio.ensure_future(self._open_new_topic(topic, confirmed_id))
            self._opening[topic] = opening
            opening.add_done_callback(lambda done: self._opened(topic, done))
        if not opening.done():
            await asyncio.wait((opening, self._health.outage()), return_when=asyncio.FIRST_COMPLETED)
            if not opening.done():
                raise self._link.unavailable()
        return opening.result()

    def _opened(self, topic: str, opening: asyncio.Future[Topic | None]) -> None:
        self._opening.pop(topic, None)
        if not opening.cancelled():
            opening.exception()  # retrieved: every waiter may have left during an outage

    async def _open_new_topic(self, topic: str, confirmed_id: str | None) -> Topic | None:
        producer, admin = self._connected()
        inbox = topic.startswith(INBOX_PREFIX)
        try:
            if inbox:
                if not await self._find_inbox(producer, admin, topic):
                    return None
            elif producer.client.cluster.partitions_for_topic(topic) is None:
                created = await admin.create(topic)
                if created:
                    # Asked before the broker's metadata has the new topic, the producer would
                    # log an ERROR per attempt until it has.
                    await admin.partition_count(topic)
                    _topic_created()
                    if confirmed_id is not None:
                        logger.warning(
                            "message %s went to %s, a topic that did not exist: no subscription to it "
                            "existed (wildcard subscriptions still find it)",
                            confirmed_id,
                            topic,
                        )
            with self._boundary(f"looking up the partitions of {topic}"):
                partitions = sorted(await producer.partitions_for(topic))
            # The adapter's own topics (inboxes) have the broker's defaults: no need to ask.
            topic_max = None if topic.startswith(RESERVED_PREFIX) else await admin.max_message_bytes(topic)
        except BrokerUnavailableError as error:
            self._health.lost(f"could not open topic {topic}: {error}")
            raise
        if inbox:
            producer.client._topics.discard(topic)
        batch_max = min(self._broker_max, topic_max or self._broker_max, self._max_request_size)
        assert self._batcher is not None
        return self._batcher.add_topic(
            topic,
            partitions,
            self._fits(batch_max),
            min(self._max_batch_size, batch_max),
            untracked=inbox,
        )

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
        """One record through aiokafka's own ``send`` (dead letters, raw records), confirmed
        within ``outage_timeout``."""
        producer, admin = self._connected()
        if producer.client.cluster.partitions_for_topic(topic) is None and await admin.create(topic):
            await admin.partition_count(topic)
            _topic_created()
        with self._boundary(f"writing a record to {topic}"):
            future = await producer.send(topic, value, key=key, headers=headers)
            try:
                await asyncio.wait_for(future, self.policy.outage_timeout)
            except asyncio.TimeoutError:
                raise BrokerUnavailableError(
                    f"{self._boundary.name}: a record to {topic} was not confirmed within outage_timeout "
                    f"({self.policy.outage_timeout} s); it may still arrive"
                ) from None

    # ---------------------------------------------------------------- subscribing

    async def subscribe(self, subscription: Subscription) -> None:
        _, admin = self._connected()
        if subscription.group is None:
            await self._reader_for(subscription, admin).add(subscription)
            return
        member = GroupConsumer(
            subscription,
            self._consumer_options,
            admin,
            self._dead_letters,
            self._health,
            self._boundary,
            join_timeout=self._options.join_timeout,
            discovery_interval=self._options.discovery_interval,
            lifetime=self._lifetime(),
            group_expiry=self.policy.group_expiry,
        )
        await member.start()
        self._members[subscription.id] = member

    def _reader_for(self, subscription: Subscription, admin: TopicAdmin) -> FanoutReader:
        """The reader of an ungrouped subscription: the reply inbox's or the fan-out one,
        made at first use."""
        if subscription.is_inbox:
            if self._inbox is None:
                self._inbox = self._new_reader(ReplyInbox, "inbox", admin)
            return self._inbox
        if self._fanout is None:
            self._fanout = self._new_reader(FanoutReader, "fan-out", admin)
        return self._fanout

    def _new_reader(self, kind: type[_Reader], name: str, admin: TopicAdmin) -> _Reader:
        async def create(topic: str, partitions: int | None) -> None:
            if await admin.create(topic, partitions=partitions):
                _topic_created()

        return kind(
            name,
            self._reader_options,
            admin,
            self._options.discovery_interval,
            create,
            self._health,
            self._boundary,
        )

    def _lifetime(self) -> Groups:
        if self._groups is None:
            raise BrokerUnavailableError(f"{self._boundary.name}: the adapter is not connected")
        return self._groups

    # ---------------------------------------------------------------- groups over time

    async def list_groups(self) -> list[GroupInfo]:
        return await self._lifetime().every()

    async def purge_group(self, group: str, pattern: str) -> int:
        return await self._lifetime().purge(group, pattern)

    async def delete_group(self, group: str, pattern: str) -> bool:
        return await self._lifetime().delete(group, pattern)

    async def unsubscribe(self, subscription: Subscription) -> None:
        if subscription.group is None:
            reader = self._inbox if subscription.is_inbox else self._fanout
            if reader is not None:
                await reader.remove(subscription)
            return
        member = self._members.pop(subscription.id, None)
        if member is not None:
            self._leave(member)

    def _leave(self, member: GroupConsumer) -> None:
        # Stop feeding now; leave the group once the handlers in flight are done, so their
        # offsets are committed rather than read again by the next member.
        member.stop_reading()
        self._leaving.start(member.stop(self._options.leave_timeout))


def _topic_created() -> None:
    _fanout.topic_created()
    _group_consumer.topic_created()


async def _abandon(producer: Any) -> None:
    """Stop ``producer`` without waiting for the batches it still holds. Its sender task goes
    first: failing batches under a running sender trips its assertions (and aiokafka's fatal
    error path then raises in a callback); stop() would otherwise wait for them for good."""
    sender = getattr(producer._sender, "_sender_task", None)
    if sender is not None and not sender.done():
        sender.cancel()
        # It finishes the requests in flight first, each bounded by request_timeout_ms.
        await asyncio.wait({sender}, timeout=_ABANDON_TIMEOUT)
    accumulator = producer._message_accumulator
    for batches in accumulator._batches.values():
        # A batch that a retriable error put back in the queue has left the pending set, but
        # keeps the callback that removes it from there when it ends (aiokafka 0.14): without
        # this, failing it raises KeyError in that callback.
        accumulator._pending_batches.update(batches)
    accumulator.fail_all(ProducerClosed())
    for batch in accumulator._pending_batches:
        # The batcher has reported these messages (with their ids) already; unread, the same
        # failure would come again from asyncio as "exception was never retrieved".
        for future in (batch.future, batch._drain_waiter):
            if not future.cancelled():  # exception() would raise CancelledError instead
                future.exception()
    await _quietly(producer.stop())


#: Seconds a producer being abandoned may take to finish its requests in flight.
_ABANDON_TIMEOUT = 5.0


async def _quietly(closing: Any) -> None:
    try:
        await closing
    except Exception as error:
        logger.debug("while closing a Kafka client: %s", error)
