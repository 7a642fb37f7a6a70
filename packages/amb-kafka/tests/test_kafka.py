"""Kafka-specific behaviour against a real broker: wire format, keys and partitions, commits,
retries and dead letters, topic discovery, and the reply inbox's lifetime."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import NewTopic  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

from amb_core import BrokerUnavailableError, Message, MessageBus
from amb_core.adapter import decode, encode
from amb_core.testing import BusFactory, Recorder
from amb_kafka import KafkaBroker
from amb_kafka._admin import DEFAULT_NUM_PARTITIONS
from amb_kafka._naming import dead_letter_topic
from conftest import BOOTSTRAP, WAIT

pytestmark = pytest.mark.anyio


async def _records(topic: str, count: int, partitions: int = 1) -> list[Any]:
    """The first ``count`` records of ``topic``, read with a plain aiokafka consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        with anyio.fail_after(WAIT):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def test_records_carry_the_envelope_and_keyless_ones_spread_over_the_partitions(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    bus = await amb_make_bus(num_partitions=4)
    ids = [await bus.publish(amb_topic, {"n": n}, wait_for_confirmation=True) for n in range(20)]
    records = await _records(amb_topic, 20, partitions=4)
    assert {record.key for record in records} == {None}
    # In turn, so that a group's members share one publisher's work (issue 12).
    assert Counter(record.partition for record in records) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert sorted(decode(record.value).id for record in records) == sorted(ids)
    assert all(record.headers == () for record in records)


async def test_the_key_is_the_record_key_and_picks_the_partition_as_kafka_does(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    bus = await amb_make_bus(num_partitions=4)
    keys = [f"order-{n % 3}" for n in range(30)]
    for n, key in enumerate(keys):
        await bus.publish(amb_topic, {"n": n}, key=key, wait_for_confirmation=n == 29)
    records = await _records(amb_topic, 30, partitions=4)
    for record in records:
        assert record.key == decode(record.value).key.encode()
        # aiokafka's (and the Java client's) default partitioner puts it in the same place.
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 4
    by_key: dict[bytes, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(record.key, []).append(decode(record.value).payload["n"])
    assert all(ns == sorted(ns) and len(ns) == 10 for ns in by_key.values())


async def test_a_topic_the_adapter_creates_has_num_partitions(
    amb_make_bus: BusFactory, amb_topic: str, admin: Any
) -> None:
    bus = await amb_make_bus()
    await bus.publish(amb_topic, {}, wait_for_confirmation=True)
    metadata = await admin._client.fetch_all_metadata()
    assert len(metadata.partitions_for_topic(amb_topic)) == DEFAULT_NUM_PARTITIONS > 1
    with pytest.raises(ValueError, match="num_partitions"):
        KafkaBroker(BOOTSTRAP, num_partitions=0)


async def test_one_publishers_keyed_messages_stay_in_order_across_partitions(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    publisher, subscriber = await amb_make_bus(num_partitions=3), await amb_make_bus()
    got = Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, got)
    for n in range(200):
        await publisher.publish(amb_topic, {"n": n}, key=f"k{n % 4}")
    await got.wait_for(200)
    for k in range(4):
        mine = [p["n"] for p in got.payloads if p["n"] % 4 == k]
        assert mine == list(range(k, 200, 4))


async def test_subscriptions_sharing_the_consumer_get_each_message_once(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    # One partition: what this checks rides on the order of one partition's records.
    # The first handler holds on until more subscriptions have joined the shared consumer, so
    # the joins (one to another topic reassigns the consumer, which repositions it) land while
    # a fetched batch is still being handed over: nothing may be lost or handed over twice.
    publisher, subscriber = (
        await amb_make_bus(num_partitions=1),
        await amb_make_bus(num_partitions=1, queue_size=4),
    )
    joined = anyio.Event()
    first, second, elsewhere = Recorder(timeout=WAIT), Recorder(timeout=WAIT), Recorder(timeout=WAIT)

    async def held(message: Message) -> None:
        await joined.wait()
        await first(message)

    await subscriber.subscribe(amb_topic, held)
    for n in range(50):
        await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=n == 49)
    await subscriber.subscribe(amb_topic, second)
    await subscriber.subscribe(f"{amb_topic}.other", elsewhere)
    joined.set()
    for n in range(50, 100):
        await publisher.publish(amb_topic, {"n": n})
    await publisher.publish(amb_topic, {"n": "end"}, wait_for_confirmation=True)
    await first.wait_for(101)
    await second.wait_for(51)
    assert [p["n"] for p in first.payloads] == [*range(100), "end"]
    assert [p["n"] for p in second.payloads] == [*range(50, 100), "end"]


async def test_a_message_that_keeps_failing_is_dead_lettered_and_the_partition_moves_on(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    # One partition: what this checks rides on the order of one partition's records.
    bus = await amb_make_bus(num_partitions=1, max_attempts=2)
    got = Recorder(timeout=WAIT)
    attempts: dict[int, int] = {}

    async def fails_on_zero(message: Message) -> None:
        n = message.payload["n"]
        attempts[n] = attempts.get(n, 0) + 1
        if n == 0:
            raise RuntimeError("always fails")
        await got(message)

    await bus.subscribe(amb_topic, fails_on_zero, group="workers")
    await bus.publish(amb_topic, {"n": 0})
    await bus.publish(amb_topic, {"n": 1})
    await got.wait_for(1)
    [record] = await _records(dead_letter_topic(amb_topic), 1)
    assert attempts[0] == 2
    assert decode(record.value).payload == {"n": 0}
    headers = dict(record.headers)
    assert headers["amb-dlq-topic"] == amb_topic.encode()
    assert headers["amb-dlq-group"] == f"workers.{amb_topic}".encode()
    assert headers["amb-dlq-attempts"] == b"2"
    assert headers["amb-dlq-offset"] == b"0"
    assert headers["amb-dlq-reason"] == b"handler raised RuntimeError: always fails"


async def test_a_group_resumes_from_its_last_commit(amb_make_bus: BusFactory, amb_topic: str) -> None:
    # One partition: what this checks rides on the order of one partition's records.
    publisher = await amb_make_bus(num_partitions=1)
    first_bus = await amb_make_bus(num_partitions=1)
    first = Recorder(timeout=WAIT)
    await first_bus.subscribe(amb_topic, first, group="workers", concurrency=4)
    for n in range(10):
        await publisher.publish(amb_topic, {"n": n})
    await first.wait_for(10)
    await first_bus.disconnect()
    for n in range(10, 15):
        await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=True)
    second = Recorder(timeout=WAIT)
    second_bus = await amb_make_bus(num_partitions=1)
    await second_bus.subscribe(amb_topic, second, group="workers")
    await second.wait_for(5)
    await publisher.publish(amb_topic, {"n": 15})
    await second.wait_for(6)
    assert [p["n"] for p in second.payloads] == list(range(10, 16))  # nothing handled twice


async def test_a_message_abandoned_at_shutdown_goes_to_the_next_member(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    publisher = await amb_make_bus()
    holding = anyio.Event()

    async def hangs(message: Message) -> None:
        holding.set()
        await anyio.sleep_forever()

    first_bus = await amb_make_bus(drain_timeout=0.1, leave_timeout=0.1)
    await first_bus.subscribe(amb_topic, hangs, group="workers")
    await publisher.publish(amb_topic, {"n": 1})
    with anyio.fail_after(WAIT):
        await holding.wait()
    await first_bus.disconnect()  # the handler is cancelled: the message was never handled

    got = Recorder(timeout=WAIT)
    second_bus = await amb_make_bus()
    await second_bus.subscribe(amb_topic, got, group="workers")
    assert [m.payload for m in await got.wait_for(1)] == [{"n": 1}]


async def test_out_of_order_completions_commit_only_the_finished_prefix(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    # One partition: what this checks rides on the order of one partition's records.
    publisher = await amb_make_bus(num_partitions=1)
    release = anyio.Event()
    done = Recorder(timeout=WAIT)

    async def first_one_waits(message: Message) -> None:
        if message.payload["n"] == 0:
            await release.wait()
        await done(message)

    bus = await amb_make_bus(num_partitions=1, drain_timeout=0.1, leave_timeout=0.1)
    await bus.subscribe(amb_topic, first_one_waits, group="workers", concurrency=4)
    for n in range(4):
        await publisher.publish(amb_topic, {"n": n})
    await done.wait_for(3)  # 1, 2 and 3 finished while 0 is still running
    await bus.disconnect()  # 0 is cancelled: nothing may be committed past it

    again = Recorder(timeout=WAIT)
    second = await amb_make_bus(num_partitions=1)
    await second.subscribe(amb_topic, again, group="workers")
    await again.wait_for(4)
    assert sorted(p["n"] for p in again.payloads) == [0, 1, 2, 3]


async def _produce_plain(topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


@pytest.mark.parametrize("group", [None, "workers"])
async def test_wildcards_find_topics_created_elsewhere(
    amb_make_bus: BusFactory, amb_topic: str, group: str | None, admin: Any
) -> None:
    bus = await amb_make_bus(discovery_interval=0.2)
    got = Recorder(timeout=WAIT)
    await bus.subscribe(f"{amb_topic}.*", got, group=group)
    # Created and written by a foreign client: only periodic discovery can find it, and its
    # first record was written before the subscription knew the topic.
    await admin.create_topics([NewTopic(f"{amb_topic}.new", 1, 1)])
    message = Message(id="m1", topic=f"{amb_topic}.new", payload={"n": 1})
    await _produce_plain(f"{amb_topic}.new", encode(message))
    [received] = await got.wait_for(1)
    assert received.id == "m1"


async def test_the_inbox_lives_as_long_as_its_bus(
    amb_make_bus: BusFactory, amb_topic: str, admin: Any
) -> None:
    requester, responder = await amb_make_bus(), await amb_make_bus()
    inboxes: list[str] = []
    release = anyio.Event()
    replied = anyio.Event()

    async def late(request: Message) -> None:
        assert request.reply_to is not None
        inboxes.append(request.reply_to)
        await release.wait()
        await responder.reply(request, {"ok": True})
        replied.set()

    await responder.subscribe(amb_topic, late)
    with pytest.raises(TimeoutError):
        await requester.request(amb_topic, {}, timeout=0.5)
    [inbox] = inboxes
    assert inbox in await admin.list_topics()
    await requester.disconnect()
    assert inbox not in await admin.list_topics()
    release.set()  # the responder now answers a bus that has gone away
    with anyio.fail_after(WAIT):
        await replied.wait()
    await responder.publish(f"{amb_topic}.other", {"n": 1}, wait_for_confirmation=True)  # refreshes metadata
    assert inbox not in await admin.list_topics(), "a late reply does not bring the inbox back"


async def test_connecting_to_nothing_is_a_connection_error() -> None:
    bus = MessageBus(KafkaBroker("127.0.0.1:1", request_timeout_ms=2000))
    with pytest.raises(BrokerUnavailableError) as raised:
        await bus.connect()
    assert isinstance(raised.value, ConnectionError)


async def test_a_producer_that_died_is_replaced(amb_make_bus: BusFactory, amb_topic: str) -> None:
    bus = await amb_make_bus()
    adapter = bus.adapter
    assert isinstance(adapter, KafkaBroker)
    got = Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, got)
    dead = adapter._producer
    failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failure.set_exception(RuntimeError("the sender task crashed"))
    adapter._producer_ended(dead, failure)  # what the sender task's done-callback reports
    assert adapter._renewal is not None
    await adapter._renewal
    assert adapter._producer is not dead
    await bus.publish(amb_topic, {"n": 1}, wait_for_confirmation=True)
    assert [m.payload for m in await got.wait_for(1)] == [{"n": 1}]


async def test_four_members_share_one_publishers_messages(amb_make_bus: BusFactory, amb_topic: str) -> None:
    # Issue 12: keyed by the publishing bus, all of one publisher's messages went to one member.
    publisher = await amb_make_bus()
    counts = Counter[int]()
    done = anyio.Event()

    def member(index: int) -> Any:
        async def handle(message: Message) -> None:
            counts[index] += 1
            if counts.total() == 400:
                done.set()

        return handle

    for index in range(4):
        await (await amb_make_bus()).subscribe(amb_topic, member(index), group="workers")
    for n in range(400):
        await publisher.publish(amb_topic, {"n": n})
    with anyio.fail_after(WAIT):
        await done.wait()
    assert len(counts) == 4 and min(counts.values()) >= 40, counts
