"""Size limits checked before anything is sent, and a publisher that survives the broker refusing
a batch anyway (issue 11, problems 4 and 10)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # type: ignore[import-untyped]

from amb_core import InvalidPayloadError, Message, MessageTooLargeError
from amb_core.adapter import encode
from amb_core.testing import BusFactory, Recorder, nested_payload
from amb_kafka import KafkaBroker
from amb_kafka._admin import DEFAULT_MESSAGE_MAX_BYTES
from conftest import WAIT

pytestmark = pytest.mark.anyio


async def _lower_limit(admin: Any, topic: str, limit: int) -> None:
    """Set ``topic``'s max.message.bytes, and return once the broker applies it."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)})
    await admin.alter_configs([resource])
    with anyio.fail_after(WAIT):
        while True:
            [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            values = {entry[0]: entry[1] for found in response.resources for entry in found[4]}
            if values.get("max.message.bytes") == str(limit):
                return
            await anyio.sleep(0.05)


async def test_an_oversized_publish_is_refused_before_sending_and_the_topic_keeps_working(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    # One partition: what this checks rides on the order of one partition's records.
    """2 MB on a stock broker used to raise ValueError or BrokerUnavailableError depending on the
    open batch, and to leave the producer refusing every later batch of the topic."""
    publisher, subscriber = await amb_make_bus(num_partitions=1), await amb_make_bus(num_partitions=1)
    got = Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, got)
    big = {"blob": "x" * 2_000_000}
    await publisher.publish(amb_topic, {"n": -1})  # an open batch with a record in it...
    for confirm in (False, True, False):  # ... and without
        with pytest.raises(MessageTooLargeError) as raised:
            await publisher.publish(amb_topic, big, wait_for_confirmation=confirm)
        assert isinstance(raised.value, InvalidPayloadError) and not isinstance(raised.value, ConnectionError)
    for n in range(10):
        await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=True)
    await got.wait_for(11)
    assert [p["n"] for p in got.payloads] == list(range(-1, 10))


async def test_a_payload_nested_too_deep_is_refused_and_the_bus_goes_on(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    publisher, subscriber = await amb_make_bus(), await amb_make_bus()
    got = Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, got)
    for depth in (101, 252, 5000):
        with pytest.raises(InvalidPayloadError):
            await publisher.publish(amb_topic, nested_payload(depth), wait_for_confirmation=True)
    await publisher.publish(amb_topic, nested_payload(100), wait_for_confirmation=True)
    [message] = await got.wait_for(1)
    assert message.payload == nested_payload(100)


async def test_max_message_size_is_exactly_what_the_broker_takes(
    amb_make_bus: BusFactory, amb_topic: str
) -> None:
    bus, subscriber = await amb_make_bus(), await amb_make_bus()
    adapter = bus.adapter
    assert isinstance(adapter, KafkaBroker)
    # The launcher's broker keeps Kafka's default message.max.bytes.
    assert DEFAULT_MESSAGE_MAX_BYTES - 200 < adapter.max_message_size < DEFAULT_MESSAGE_MAX_BYTES
    got = Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, got)
    base = len(encode(Message(id="m", topic=amb_topic, payload={"s": ""})))
    fits = Message(id="m", topic=amb_topic, payload={"s": "x" * (adapter.max_message_size - base)})
    assert len(encode(fits)) == adapter.max_message_size
    too_big = Message(id="m2", topic=amb_topic, payload={"s": "x" * (adapter.max_message_size - base + 1)})
    with pytest.raises(MessageTooLargeError):
        await adapter.publish(too_big, confirm=True)
    await adapter.publish(fits, confirm=True)  # the broker takes it
    [received] = await got.wait_for(1)
    assert received.payload == fits.payload


async def test_a_topic_with_a_lower_limit_is_held_to_it(
    amb_make_bus: BusFactory, amb_topic: str, admin: Any
) -> None:
    bus = await amb_make_bus()
    await bus.publish(f"{amb_topic}.other", {"n": 0}, wait_for_confirmation=True)  # connected
    from aiokafka.admin import NewTopic  # type: ignore[import-untyped]

    await admin.create_topics([NewTopic(amb_topic, 1, 1, topic_configs={"max.message.bytes": "20000"})])
    for confirm in (True, False):
        with pytest.raises(MessageTooLargeError):
            await bus.publish(amb_topic, {"s": "x" * 30_000}, wait_for_confirmation=confirm)
    await bus.publish(amb_topic, {"s": "x" * 10_000}, wait_for_confirmation=True)


async def test_a_batch_the_broker_refuses_anyway_does_not_spoil_the_producer(
    amb_make_bus: BusFactory, amb_topic: str, admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The topic's limit is lowered after the publisher read it, so the broker itself refuses
    the next large batch. That leaves a gap in the idempotent producer's sequence numbers, which
    used to get every later batch refused (OutOfOrderSequenceNumber, for good)."""
    publisher, subscriber = await amb_make_bus(), await amb_make_bus()
    got = Recorder(timeout=WAIT)
    await subscriber.subscribe(amb_topic, got)
    # One key, so that the order checked below is promised (keyless records spread over partitions).
    await publisher.publish(amb_topic, {"n": -1}, wait_for_confirmation=True, key="k")
    await _lower_limit(admin, amb_topic, 10_000)
    with anyio.fail_after(WAIT), pytest.raises(MessageTooLargeError):
        while True:  # until the broker enforces the new limit (see the next test)
            await publisher.publish(amb_topic, {"s": "x" * 50_000}, wait_for_confirmation=True, key="k")
    for n in range(10):
        await publisher.publish(amb_topic, {"n": n}, wait_for_confirmation=True, key="k")
    with anyio.fail_after(WAIT):
        while [p["n"] for p in got.payloads if "n" in p] != list(range(-1, 10)):
            await got.wait_for(len(got.messages) + 1)
    # The refusal taught the adapter the topic's new limit: checked before sending from now on.
    with pytest.raises(MessageTooLargeError):
        await publisher.publish(amb_topic, {"s": "x" * 50_000})


async def test_a_fire_and_forget_message_the_broker_refuses_is_logged_with_its_id(
    amb_make_bus: BusFactory, amb_topic: str, admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = await amb_make_bus()
    await publisher.publish(amb_topic, {"n": -1}, wait_for_confirmation=True)
    await _lower_limit(admin, amb_topic, 10_000)

    def logged(lost: str) -> bool:
        return any(lost in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)

    # The broker may take a moment more to enforce the new limit on the partition's log than to
    # report it: until then the record is accepted, so another one is published.
    with anyio.fail_after(WAIT):
        while True:
            lost = await publisher.publish(amb_topic, {"s": "y" * 50_000})
            with anyio.move_on_after(2):
                while not logged(lost):  # noqa: ASYNC110 - a log line is all there is to see
                    await anyio.sleep(0.05)
            if logged(lost):
                break
    await publisher.publish(amb_topic, {"n": 0}, wait_for_confirmation=True)
