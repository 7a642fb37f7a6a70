"""The bare client doing the same work: the practical limit on each broker.

* memory: an asyncio.Queue per subscription (a shared one for a group) and a task draining it;
* redis: redis-py pub/sub (PUBLISH / SUBSCRIBE), Redis Streams with a consumer group for the
  competing consumers (pub/sub cannot share work);
* rabbitmq: aio-pika on a topic exchange, one queue per subscriber, a shared queue for the group,
  a classic reply queue plus correlation ids for request/reply;
* kafka: aiokafka, a producer that sends without waiting and flushes at the end, consumers
  reading from the first offset of a fresh topic, a consumer group; the producer settings,
  record key and partition count are amb-kafka's (see `KAFKA_PRODUCER_OPTIONS`), so both do the
  same work.

Publishers serialise the payload dict for every message with the standard library's json (what
the clients' own docs show), and consumers parse it back: dict in, dict out, the work AMB and
FastStream do too, which any application must do at least. In memory the dict itself is passed.
`run.py --bare-preserialised` makes bare publishers send the bytes serialised once instead: a
lower bound no application publishing fresh payloads reaches, reported separately.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from harness import now_ns, package_versions
from scenarios import (
    PAYLOAD,
    PAYLOAD_BYTES,
    REPLY,
    REPLY_BYTES,
    ConsumerScenarios,
    Countdown,
    Implementation,
    Replies,
    Runner,
    Sample,
    ScenarioContext,
    cancel_all,
    prime,
    publish_runner,
    request_runner,
    unique_name,
)

#: Kafka consumers' fetch_max_wait_ms for bare aiokafka and FastStream alike (default 500 ms
#: would make a lone request wait for the fetch timeout).
KAFKA_FETCH_WAIT_MS = 10
#: What amb-kafka's producer does (its PRODUCER_DEFAULTS and the acks it enforces), so bare
#: aiokafka does the same work: every batch acknowledged by all in-sync replicas, idempotent,
#: batches of up to 128 KiB, no lingering. aiokafka's own defaults (acks=1, 16 KiB batches) are
#: less work per record than AMB is allowed to do.
KAFKA_PRODUCER_OPTIONS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "max_batch_size": 128 * 1024,
    "linger_ms": 0,
}
#: amb-kafka keys every record with its publisher's id (18 ASCII bytes, so that one publisher's
#: messages to a topic share a partition and keep their order); bare records carry a key like it,
#: and go to the partition that key picks, worked out once per topic as amb-kafka does (aiokafka's
#: partitioner would hash the key again for every record).
KAFKA_KEY = b"bench-publisher-00"
#: redis-py has no multiplexing: 100 requests in flight need 100 pooled connections (default cap 100).
REDIS_MAX_CONNECTIONS = 256


def serialise(payload: dict[str, Any]) -> bytes:
    """A payload as bare publishers put it on the wire: serialised for every message (the bytes
    of PAYLOAD_BYTES / REPLY_BYTES), or the bytes serialised once after `use_preserialised_payloads`."""
    if _preserialised:
        return _PRESERIALISED[id(payload)]
    return _to_json(payload).encode()


# One encoder for every message: json.dumps with non-default arguments builds a new one per call.
_to_json = json.JSONEncoder(separators=(",", ":")).encode
_preserialised = False
_PRESERIALISED = {id(PAYLOAD): PAYLOAD_BYTES, id(REPLY): REPLY_BYTES}


def use_preserialised_payloads() -> None:
    """Make bare publishers send the bytes serialised once (`run.py --bare-preserialised`)."""
    global _preserialised
    _preserialised = True


def bare_for(adapter: str, url: str) -> Implementation:
    classes: dict[str, type[Implementation]] = {
        "memory": BareMemory,
        "redis": BareRedis,
        "rabbitmq": BareRabbitMQ,
        "kafka": BareKafka,
    }
    return classes[adapter](adapter, url)


# =========================================================================== memory


class _QueueBroker:
    """Topic -> bounded asyncio queues, drained by one task per consumer: the least a
    publish/subscribe hop inside one event loop can cost."""

    def __init__(self) -> None:
        self.routes: dict[str, list[asyncio.Queue[Any]]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def publish(self, topic: str, item: Any) -> None:
        for queue in self.routes.get(topic, ()):
            await queue.put(item)

    def consume(self, topic: str, handler: Callable[[Any], Awaitable[None]], workers: int = 1) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1024)  # the bus's default queue bound
        self.routes.setdefault(topic, []).append(queue)

        async def drain() -> None:
            while True:
                await handler(await queue.get())

        self.tasks.extend(asyncio.get_running_loop().create_task(drain()) for _ in range(workers))


class BareMemory(ConsumerScenarios):
    name = "bare"

    def describe(self) -> str:
        return "asyncio.Queue pipeline (stdlib)"

    @asynccontextmanager
    async def publish(self) -> AsyncIterator[Runner]:
        broker = _QueueBroker()
        topic = unique_name("publish")

        async def run(n: int) -> Sample:
            start = now_ns()
            for _ in range(n):
                await broker.publish(topic, PAYLOAD)
            return Sample(n, now_ns() - start)

        yield run

    @asynccontextmanager
    async def _consumers(self, count: int, grouped: bool) -> AsyncIterator[Runner]:
        broker = _QueueBroker()
        topic = unique_name("consume")
        countdown = Countdown()

        async def handler(item: Any) -> None:
            countdown.hit()

        if grouped:
            broker.consume(topic, handler, workers=count)
        else:
            for _ in range(count):
                broker.consume(topic, handler)

        async def publish() -> None:
            await broker.publish(topic, PAYLOAD)

        try:
            per_message = 1 if grouped else count
            await prime(publish, countdown, per_message)
            yield publish_runner(publish, countdown, per_message)
        finally:
            await cancel_all(broker.tasks)

    @asynccontextmanager
    async def request_reply(self, in_flight: int) -> AsyncIterator[Runner]:
        broker = _QueueBroker()
        replies = Replies()
        topic = unique_name("rpc")

        async def respond(item: tuple[str, dict[str, Any]]) -> None:
            replies.resolve(item[0], REPLY)  # type: ignore[arg-type]  # in memory the reply is the dict

        broker.consume(topic, respond)

        async def request() -> None:
            correlation_id, future = replies.expect()
            await broker.publish(topic, (correlation_id, PAYLOAD))
            await replies.wait(correlation_id, future)

        try:
            yield request_runner(request, in_flight)
        finally:
            await cancel_all(broker.tasks)


# =========================================================================== redis


class BareRedis(Implementation):
    name = "bare"

    def describe(self) -> str:
        return f"redis-py {package_versions(['redis'])['redis']}"

    def _client(self) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(self.url, max_connections=REDIS_MAX_CONNECTIONS)

    async def check(self) -> None:
        client = self._client()
        try:
            await client.ping()
        finally:
            await client.aclose()

    @asynccontextmanager
    async def publish(self) -> AsyncIterator[Runner]:
        client = self._client()
        channel = unique_name("publish")

        async def run(n: int) -> Sample:
            start = now_ns()
            for _ in range(n):
                await client.publish(channel, serialise(PAYLOAD))
            return Sample(n, now_ns() - start)

        try:
            yield run
        finally:
            await client.aclose()

    @staticmethod
    async def _listen(pubsub: Any, on_message: Callable[[bytes], Awaitable[None]]) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is not None and message["type"] == "message":
                await on_message(message["data"])

    @asynccontextmanager
    async def _subscribers(self, count: int) -> AsyncIterator[Runner]:
        publisher, consumer = self._client(), self._client()
        channel = unique_name("pubsub")
        countdown = Countdown()
        tasks: list[asyncio.Task[None]] = []

        async def handler(data: bytes) -> None:
            json.loads(data)
            countdown.hit()

        pubsubs = []
        try:
            for _ in range(count):  # one connection per subscriber, as separate agents would have
                pubsub = consumer.pubsub()
                await pubsub.subscribe(channel)
                pubsubs.append(pubsub)
                tasks.append(asyncio.create_task(self._listen(pubsub, handler)))

            async def publish() -> None:
                await publisher.publish(channel, serialise(PAYLOAD))

            await prime(publish, countdown, count)
            yield publish_runner(publish, countdown, count)
        finally:
            await cancel_all(tasks)
            for pubsub in pubsubs:
                await pubsub.aclose()
            await publisher.aclose()
            await consumer.aclose()

    def end_to_end(self) -> ScenarioContext:
        return self._subscribers(1)

    def fan_out(self, subscribers: int) -> ScenarioContext:
        return self._subscribers(subscribers)

    @asynccontextmanager
    async def competing(self, members: int) -> AsyncIterator[Runner]:
        publisher, consumer = self._client(), self._client()
        stream, group = unique_name("stream"), "workers"
        countdown = Countdown()
        await consumer.xgroup_create(stream, group, id="$", mkstream=True)

        running = True

        async def work(name: str) -> None:
            # redis-py may swallow a cancellation that lands in a blocking XREADGROUP, so the
            # loop also checks a flag, and blocks briefly.
            while running:
                answer = await consumer.xreadgroup(group, name, {stream: ">"}, count=100, block=100)
                for _, entries in answer or ():
                    for _, fields in entries:
                        json.loads(fields[b"d"])
                        countdown.hit()
                    await consumer.xack(stream, group, *(entry_id for entry_id, _ in entries))

        tasks = [asyncio.create_task(work(f"c{i}")) for i in range(members)]

        async def publish() -> None:
            await publisher.xadd(stream, {"d": serialise(PAYLOAD)})

        try:
            await prime(publish, countdown, 1)
            yield publish_runner(publish, countdown, 1)
        finally:
            running = False
            await cancel_all(tasks)
            await publisher.delete(stream)
            await publisher.aclose()
            await consumer.aclose()

    @asynccontextmanager
    async def request_reply(self, in_flight: int) -> AsyncIterator[Runner]:
        requester, responder = self._client(), self._client()
        topic, inbox = unique_name("rpc"), unique_name("inbox")
        replies = Replies()
        inbox_sub, request_sub = requester.pubsub(), responder.pubsub()
        await inbox_sub.subscribe(inbox)
        await request_sub.subscribe(topic)

        async def on_reply(data: bytes) -> None:
            reply = json.loads(data)
            replies.resolve(reply["c"], data)

        async def on_request(data: bytes) -> None:
            request = json.loads(data)
            await responder.publish(request["r"], json.dumps({"c": request["c"], "p": REPLY}).encode())

        tasks = [
            asyncio.create_task(self._listen(inbox_sub, on_reply)),
            asyncio.create_task(self._listen(request_sub, on_request)),
        ]

        async def request() -> None:
            correlation_id, future = replies.expect()
            await requester.publish(
                topic, json.dumps({"c": correlation_id, "r": inbox, "p": PAYLOAD}).encode()
            )
            await replies.wait(correlation_id, future)

        try:
            await request()
            yield request_runner(request, in_flight)
        finally:
            await cancel_all(tasks)
            await inbox_sub.aclose()
            await request_sub.aclose()
            await requester.aclose()
            await responder.aclose()


# =========================================================================== rabbitmq

EXCHANGE = "amb-bench"


class BareRabbitMQ(ConsumerScenarios):
    name = "bare"

    def describe(self) -> str:
        versions = package_versions(["aio-pika", "aiormq"])
        return f"aio-pika {versions['aio-pika']} (aiormq {versions['aiormq']})"

    async def _connect(self, stack: AsyncExitStack) -> Any:
        import aio_pika

        connection = await aio_pika.connect(self.url)
        stack.push_async_callback(connection.close)
        return connection

    async def _exchange(self, channel: Any) -> Any:
        import aio_pika

        return await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, auto_delete=False)

    async def check(self) -> None:
        async with AsyncExitStack() as stack:
            await self._connect(stack)

    @asynccontextmanager
    async def publish(self) -> AsyncIterator[Runner]:
        import aio_pika

        async with AsyncExitStack() as stack:
            connection = await self._connect(stack)
            channel = await connection.channel(publisher_confirms=False)
            exchange = await self._exchange(channel)
            topic = unique_name("publish")

            async def run(n: int) -> Sample:
                start = now_ns()
                for _ in range(n):
                    await exchange.publish(aio_pika.Message(serialise(PAYLOAD)), routing_key=topic)
                # A synchronous method on the same channel: its answer comes after the broker
                # has processed every publish before it.
                await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, passive=True)
                return Sample(n, now_ns() - start)

            yield run

    @asynccontextmanager
    async def _consumers(self, count: int, grouped: bool) -> AsyncIterator[Runner]:
        import aio_pika

        async with AsyncExitStack() as stack:
            publisher = await self._connect(stack)
            consumer = await self._connect(stack)
            pub_channel = await publisher.channel(publisher_confirms=False)
            exchange = await self._exchange(pub_channel)
            topic = unique_name("consume")
            countdown = Countdown()

            async def on_message(message: Any) -> None:
                json.loads(message.body)
                countdown.hit()

            async def on_work(message: Any) -> None:
                json.loads(message.body)
                countdown.hit()
                await message.ack()

            if grouped:
                shared = unique_name("work")
                for _ in range(count):
                    channel = await consumer.channel()
                    await channel.set_qos(prefetch_count=100)
                    queue = await channel.declare_queue(shared, auto_delete=True)
                    await queue.bind(EXCHANGE, routing_key=topic)
                    await queue.consume(on_work)
            else:
                channel = await consumer.channel()
                for _ in range(count):
                    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
                    await queue.bind(EXCHANGE, routing_key=topic)
                    await queue.consume(on_message, no_ack=True)

            async def publish() -> None:
                await exchange.publish(aio_pika.Message(serialise(PAYLOAD)), routing_key=topic)

            per_message = 1 if grouped else count
            await prime(publish, countdown, per_message)
            yield publish_runner(publish, countdown, per_message)

    @asynccontextmanager
    async def request_reply(self, in_flight: int) -> AsyncIterator[Runner]:
        import aio_pika

        async with AsyncExitStack() as stack:
            requester = await self._connect(stack)
            responder = await self._connect(stack)
            req_channel = await requester.channel(publisher_confirms=False)
            resp_channel = await responder.channel(publisher_confirms=False)
            exchange = await self._exchange(req_channel)
            topic = unique_name("rpc")
            replies = Replies()

            inbox = await req_channel.declare_queue(exclusive=True, auto_delete=True)

            async def on_reply(message: Any) -> None:
                replies.resolve(message.correlation_id, message.body)

            await inbox.consume(on_reply, no_ack=True)

            requests = await resp_channel.declare_queue(exclusive=True, auto_delete=True)
            await requests.bind(EXCHANGE, routing_key=topic)

            async def on_request(message: Any) -> None:
                json.loads(message.body)
                await resp_channel.default_exchange.publish(
                    aio_pika.Message(serialise(REPLY), correlation_id=message.correlation_id),
                    routing_key=message.reply_to,
                )

            await requests.consume(on_request, no_ack=True)

            async def request() -> None:
                correlation_id, future = replies.expect()
                await exchange.publish(
                    aio_pika.Message(serialise(PAYLOAD), correlation_id=correlation_id, reply_to=inbox.name),
                    routing_key=topic,
                )
                await replies.wait(correlation_id, future)

            await request()
            yield request_runner(request, in_flight)


# =========================================================================== kafka


class BareKafka(ConsumerScenarios):
    name = "bare"

    def __init__(self, adapter: str, url: str) -> None:
        super().__init__(adapter, url)
        self._partitions: dict[str, int] = {}  # partition count of each topic _topic() created

    def describe(self) -> str:
        return f"aiokafka {package_versions(['aiokafka'])['aiokafka']}"

    @property
    def bootstrap(self) -> str:
        return self.url.split("://", 1)[-1].rstrip("/")

    async def check(self) -> None:
        async with AsyncExitStack() as stack:
            await self._producer(stack)

    async def _producer(self, stack: AsyncExitStack) -> Any:
        from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **KAFKA_PRODUCER_OPTIONS)
        await producer.start()
        stack.push_async_callback(producer.stop)
        return producer

    async def _topic(self, stack: AsyncExitStack, kind: str, partitions: int | None = 1) -> str:
        """A fresh topic, deleted afterwards, so consumers can read it from its first offset.
        ``partitions=None``: the broker's ``num.partitions``, which is what amb-kafka creates."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

        name = unique_name(kind)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        stack.push_async_callback(admin.close)
        if partitions is None:
            partitions = await self._default_partitions(admin)
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        self._partitions[name] = partitions

        async def delete() -> None:
            with contextlib.suppress(Exception):  # best effort: the broker keeps 24 h of logs anyway
                await admin.delete_topics([name])

        stack.push_async_callback(delete)
        return name

    def _keyed(self, topic: str) -> dict[str, Any]:
        """``send`` arguments: the key, and the partition it picks (what aiokafka's default
        partitioner would choose, computed once)."""
        from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

        partition = (murmur2(KAFKA_KEY) & 0x7FFFFFFF) % self._partitions.get(topic, 1)
        return {"key": KAFKA_KEY, "partition": partition}

    @staticmethod
    async def _default_partitions(admin: Any) -> int:
        """The broker's ``num.partitions`` (1 if it will not say), as amb-kafka reads it."""
        from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
            ConfigResource,
            ConfigResourceType,
        )

        broker = str(min(node.nodeId for node in admin._client.cluster.brokers()))
        with contextlib.suppress(Exception):
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.BROKER, broker, {"num.partitions": None})]
            )
            values = {entry[0]: entry[1] for resource in response.resources for entry in resource[4]}
            return int(values["num.partitions"])
        return 1

    async def _consumer(
        self, stack: AsyncExitStack, topic: str, group: str | None, listener: Any = None
    ) -> Any:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=group is not None,
            fetch_max_wait_ms=KAFKA_FETCH_WAIT_MS,
        )
        if group is not None:
            consumer.subscribe([topic], listener=listener)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        if group is None:  # every partition, without a group, as amb-kafka's ungrouped consumer
            consumer.assign([TopicPartition(topic, p) for p in range(self._partitions.get(topic, 1))])
        return consumer

    @staticmethod
    async def _read(consumer: Any, on_record: Callable[[Any], Awaitable[None]]) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    await on_record(record)

    @asynccontextmanager
    async def publish(self) -> AsyncIterator[Runner]:
        async with AsyncExitStack() as stack:
            producer = await self._producer(stack)
            topic = await self._topic(stack, "publish", partitions=None)
            keyed = self._keyed(topic)

            async def run(n: int) -> Sample:
                start = now_ns()
                for _ in range(n):
                    await producer.send(topic, serialise(PAYLOAD), **keyed)  # queues it; returns a future
                await producer.flush()
                return Sample(n, now_ns() - start)

            yield run

    @asynccontextmanager
    async def _consumers(self, count: int, grouped: bool) -> AsyncIterator[Runner]:
        async with AsyncExitStack() as stack:
            producer = await self._producer(stack)
            # The partitions amb-kafka would create; its key sends one publisher's records to
            # one of them, so the group shares one partition's work, as AMB's does.
            topic = await self._topic(stack, "consume", partitions=None)
            countdown = Countdown()
            group = unique_name("group") if grouped else None

            async def on_record(record: Any) -> None:
                json.loads(record.value)
                countdown.hit()

            shares: dict[int, set[Any] | None] = dict.fromkeys(range(count))
            consumers = [
                await self._consumer(stack, topic, group, _share_listener(shares, index))
                for index in range(count)
            ]
            tasks = [asyncio.create_task(self._read(c, on_record)) for c in consumers]
            stack.push_async_callback(cancel_all, tasks)
            if grouped:
                # Wait until every member has its share (with fewer partitions than members,
                # some get none) and together they hold each partition once: one generation.
                partitions = self._partitions[topic]
                deadline = now_ns() + 30 * 10**9
                while now_ns() < deadline and not _shared_out(shares, partitions):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

            keyed = self._keyed(topic)

            async def publish() -> None:
                await producer.send(topic, serialise(PAYLOAD), **keyed)

            per_message = 1 if grouped else count
            await prime(publish, countdown, per_message)
            yield publish_runner(publish, countdown, per_message)

    @asynccontextmanager
    async def request_reply(self, in_flight: int) -> AsyncIterator[Runner]:
        async with AsyncExitStack() as stack:
            requester = await self._producer(stack)
            responder = await self._producer(stack)
            topic = await self._topic(stack, "rpc", partitions=None)
            inbox = await self._topic(stack, "inbox")  # 1 partition, as amb-kafka's reply inbox
            replies = Replies()
            request_keyed, reply_keyed = self._keyed(topic), self._keyed(inbox)

            async def on_reply(record: Any) -> None:
                replies.resolve(dict(record.headers).get("c", b"").decode(), record.value)

            async def on_request(record: Any) -> None:
                json.loads(record.value)
                headers = dict(record.headers)
                await responder.send(
                    headers["r"].decode(), serialise(REPLY), headers=[("c", headers["c"])], **reply_keyed
                )

            inbox_reader = await self._consumer(stack, inbox, None)
            request_reader = await self._consumer(stack, topic, None)
            tasks = [
                asyncio.create_task(self._read(inbox_reader, on_reply)),
                asyncio.create_task(self._read(request_reader, on_request)),
            ]
            stack.push_async_callback(cancel_all, tasks)

            async def request() -> None:
                correlation_id, future = replies.expect()
                headers = [("c", correlation_id.encode()), ("r", inbox.encode())]
                await requester.send(topic, serialise(PAYLOAD), headers=headers, **request_keyed)
                await replies.wait(correlation_id, future)

            await request()
            yield request_runner(request, in_flight)


def _share_listener(shares: dict[int, set[Any] | None], index: int) -> Any:
    """A rebalance listener noting which partitions group member ``index`` holds (None: being
    rebalanced); aiokafka has no event for "the group has settled"."""
    from aiokafka import ConsumerRebalanceListener

    class Share(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: set[Any]) -> None:
            shares[index] = None

        def on_partitions_assigned(self, assigned: set[Any]) -> None:
            shares[index] = set(assigned)

    return Share()


def _shared_out(shares: dict[int, set[Any] | None], partitions: int) -> bool:
    """Every member has its share and together they hold each partition once."""
    held = list(shares.values())
    if any(share is None for share in held):
        return False
    owned = [tp for share in held for tp in share or ()]
    return len(owned) == len(set(owned)) == partitions
