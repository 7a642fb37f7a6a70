"""Construction: options, URLs, the entry point, an unreachable broker."""

from __future__ import annotations

from typing import Any

import pytest

from amb_core import BrokerUnavailableError, MessageBus
from amb_core.subscription import Subscription
from amb_rabbitmq import RabbitMQBroker
from amb_rabbitmq.naming import Names
from amb_rabbitmq.options import Options


def test_the_amqp_schemes_resolve_to_this_adapter(url: str) -> None:
    for scheme_url in (url, url.replace("amqp://", "amqps://", 1)):
        bus = MessageBus.from_url(scheme_url, max_attempts=5)
        assert isinstance(bus.adapter, RabbitMQBroker)
        assert bus.adapter.options.max_attempts == 5
    assert bus.capabilities.priority and bus.capabilities.survives_restart
    assert bus.capabilities.redelivers_failed


def test_the_seed_import_path_works() -> None:
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
    ],
    ids=repr,
)
def test_bad_options_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        RabbitMQBroker("amqp://localhost/", **options)


def test_only_amqp_urls_are_accepted() -> None:
    with pytest.raises(ValueError):
        RabbitMQBroker("redis://localhost:6379/0")


def test_prefetch_follows_concurrency_unless_set() -> None:
    default = Options()
    assert default.prefetch_for(1) == 256
    assert default.prefetch_for(16) == 512
    assert default.prefetch_for(1000) == 1000
    assert Options(prefetch=7).prefetch_for(1000) == 7


@pytest.mark.anyio
async def test_queue_names_are_derived_from_the_prefix() -> None:
    names = Names("app")

    async def handler(message: object) -> None:
        pass

    grouped = Subscription("s1", "tasks.*.#", handler, group="workers")
    ungrouped = Subscription("s2", "tasks.a", handler)
    assert names.queue_for(grouped) == "app.group.workers.tasks.@.#"
    assert names.queue_for(ungrouped) == "app.sub.s2"
    assert (names.dead_letter_exchange, names.dead_letter_queue) == ("app.dlx", "app.dlq")
    assert names.exchange_for("_amb.inbox.x") == "app.reserved"
    assert names.exchange_for("agent.thoughts") == "app"
    long = Subscription("s3", ".".join(["segment"] * 31), handler, group="g" * 40)
    name = names.queue_for(long)
    assert len(name) == 255
    assert name != names.queue_for(
        Subscription("s4", ".".join(["segment"] * 30) + ".other", handler, group="g" * 40)
    )


@pytest.mark.anyio
async def test_an_unreachable_broker_raises_broker_unavailable() -> None:
    bus = MessageBus(RabbitMQBroker("amqp://guest:guest@127.0.0.1:1/", connect_timeout=2))
    with pytest.raises(BrokerUnavailableError) as raised:
        await bus.connect()
    assert isinstance(raised.value, ConnectionError)
    assert not bus.is_connected
