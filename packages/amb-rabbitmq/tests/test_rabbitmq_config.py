"""Construction: options, URLs, the entry point, an unreachable broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from amb_core import BrokerUnavailableError, InvalidPayloadError, MessageBus, MessageTooLargeError
from amb_core.testing import BusFactory, Recorder
from amb_rabbitmq import RabbitMQBroker
from amb_rabbitmq._naming import Names


def test_the_amqp_schemes_resolve_to_this_adapter(amb_url: str) -> None:
    for scheme_url in (amb_url, amb_url.replace("amqp://", "amqps://", 1)):
        bus = MessageBus.from_url(scheme_url, max_attempts=5)
        assert isinstance(bus.adapter, RabbitMQBroker)
        assert bus.adapter.policy.max_attempts == 5
    assert bus.capabilities.priority and bus.capabilities.survives_restart
    assert bus.capabilities.redelivers_failed


def test_the_seed_import_path_works_and_names_the_new_one() -> None:
    with pytest.warns(DeprecationWarning, match="use `from amb_rabbitmq import RabbitMQBroker`"):
        from amb_core.adapters.rabbitmq_broker import RabbitMQBroker as FromSeed

    assert FromSeed is RabbitMQBroker


def test_the_password_stays_out_of_repr() -> None:
    broker = RabbitMQBroker("amqp://agent:s3cret@rabbit.example:5672/agents")
    assert "s3cret" not in repr(broker)
    assert "rabbit.example" in repr(broker)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"prefetchh": 10}, TypeError),
        ({"max_attempts": 0}, ValueError),
        ({"max_attempts": True}, ValueError),
        ({"prefetch": 0}, ValueError),
        ({"prefetch": 70_000}, ValueError),
        ({"exchange": ""}, ValueError),
        ({"exchange": "a b"}, ValueError),
        ({"exchange": "amq.topic"}, ValueError),
        ({"connect_timeout": 0}, ValueError),
        ({"outage_timeout": -1}, ValueError),
        ({"outage_buffer": 0}, ValueError),
        ({"max_message_size": 0}, ValueError),
        ({"max_message_size": 1.5}, ValueError),
        ({"max_message_size": 2**40}, ValueError),
    ],
    ids=repr,
)
def test_bad_options_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        RabbitMQBroker("amqp://localhost/", **options)


def test_only_amqp_urls_are_accepted() -> None:
    with pytest.raises(ValueError) as refused:
        RabbitMQBroker("redis://user:s3cret@localhost:6379/0")
    assert "s3cret" not in str(refused.value)


def test_the_policy_options_go_to_amb_core() -> None:
    broker = RabbitMQBroker(
        "amqp://localhost/", max_attempts=5, connect_timeout=2, outage_timeout=7, outage_buffer=9, prefetch=3
    )
    policy = broker.policy
    assert (policy.max_attempts, policy.connect_timeout, policy.outage_timeout, policy.outage_buffer) == (
        5,
        2,
        7,
        9,
    )
    assert broker.options.prefetch == 3
    assert (
        broker.link is not None and broker.link.name == broker.describe() == "RabbitMQ at amqp://localhost/"
    )


def test_max_message_size_defaults_to_rabbitmqs_own() -> None:
    # RabbitMQ 3.10's max_message_size is 134217728 bytes (128 MiB) unless configured.
    assert RabbitMQBroker("amqp://localhost/").max_message_size == 134_217_728
    assert RabbitMQBroker("amqp://localhost/", max_message_size=1000).max_message_size == 1000


def test_prefetch_follows_concurrency_unless_set() -> None:
    default = RabbitMQBroker("amqp://localhost/").options
    assert default.prefetch_for(1) == 256
    assert default.prefetch_for(16) == 512
    assert default.prefetch_for(1000) == 1000
    assert RabbitMQBroker("amqp://localhost/", prefetch=7).options.prefetch_for(1000) == 7


def test_queue_names_are_derived_from_the_prefix() -> None:
    names = Names("app")
    assert names.group_queue("workers", "tasks.*.#") == "app.group.workers.tasks.@.#"
    assert names.fanout_queue("s2") == "app.sub.s2"
    assert names.inbox_queue("s3") == "app.inbox.s3"
    assert (names.dead_letter_exchange, names.dead_letter_queue) == ("app.dlx", "app.dlq")
    assert names.exchange_for("_amb.inbox.x") == "app.reserved"
    assert names.exchange_for("agent.thoughts") == "app"
    name = names.group_queue("g" * 40, ".".join(["segment"] * 31))
    assert len(name) == 255
    assert name != names.group_queue("g" * 40, ".".join(["segment"] * 30) + ".other")


@pytest.mark.anyio
async def test_an_unreachable_broker_raises_broker_unavailable() -> None:
    bus = MessageBus(RabbitMQBroker("amqp://guest:guest@127.0.0.1:1/", connect_timeout=2))
    with pytest.raises(BrokerUnavailableError) as raised:
        await bus.connect()
    assert isinstance(raised.value, ConnectionError)
    assert not bus.is_connected


@pytest.mark.anyio
async def test_a_message_over_max_message_size_is_refused_before_sending(
    amb_make_bus: BusFactory, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = await amb_make_bus(max_message_size=1000)
    got = amb_received()
    await bus.subscribe(amb_topic, got)
    for confirm in (False, True):
        with pytest.raises(MessageTooLargeError) as refused:
            await bus.publish(amb_topic, {"s": "x" * 1000}, wait_for_confirmation=confirm)
        assert isinstance(refused.value, InvalidPayloadError) and "1000" in str(refused.value)
    await bus.publish(amb_topic, {"s": "fits"}, wait_for_confirmation=True)
    assert [m.payload for m in await got.wait_for(1)] == [{"s": "fits"}]
