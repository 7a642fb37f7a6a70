"""URLs, options and names: no broker needed."""

from __future__ import annotations

import ssl

import pytest

from amb_core import MessageBus
from amb_kafka import KafkaBroker
from amb_kafka._naming import dead_letter_topic, group_id, topic_regex
from amb_kafka._offsets import PartitionTracker
from amb_kafka._options import bootstrap_servers


@pytest.mark.parametrize(
    ("given", "servers"),
    [
        ("kafka://h1:9092,h2:9093", ["h1:9092", "h2:9093"]),
        ("KAFKA://h1:9092/", ["h1:9092"]),
        ("localhost:9092", ["localhost:9092"]),
        (["a:1", "b:2"], ["a:1", "b:2"]),
    ],
)
def test_bootstrap_servers_come_from_urls_and_lists(given: str | list[str], servers: list[str]) -> None:
    assert bootstrap_servers(given) == servers


@pytest.mark.parametrize("bad", ["redis://h:6379", "kafka://", "kafka://h:1/path", "kafka://u:p@h:1"])
def test_a_bad_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        bootstrap_servers(bad)


def test_the_bus_finds_the_adapter_by_scheme() -> None:
    bus = MessageBus.from_url("kafka://h1:9092,h2:9092", max_attempts=5, outage_timeout=7)
    assert isinstance(bus.adapter, KafkaBroker)
    assert bus.adapter.bootstrap_servers == ["h1:9092", "h2:9092"]
    assert bus.policy.max_attempts == 5
    assert bus.policy.outage_timeout == 7
    assert bus.capabilities.redelivers_failed


def test_the_seed_constructor_still_works() -> None:
    with pytest.warns(DeprecationWarning, match="use `from amb_kafka import KafkaBroker`"):
        from amb_core.adapters.kafka_broker import KafkaBroker as SeedKafkaBroker

    assert SeedKafkaBroker("localhost:9092").bootstrap_servers == ["localhost:9092"]


def test_security_options_reach_every_client() -> None:
    context = ssl.create_default_context()
    broker = KafkaBroker(
        "h:9093",
        security_protocol="SASL_SSL",
        ssl_context=context,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="agent",
        sasl_plain_password="secret",
    )
    for options in (broker._producer_options, broker._consumer_options, broker._admin_options):
        assert options["security_protocol"] == "SASL_SSL"
        assert options["ssl_context"] is context
        assert options["sasl_mechanism"] == "SCRAM-SHA-512"
        assert options["sasl_plain_username"] == "agent"
    assert broker._producer_options["acks"] == "all"


def test_client_specific_options_go_where_they_belong() -> None:
    broker = KafkaBroker(
        "h:1", linger_ms=5, session_timeout_ms=12_000, consumer_options={"fetch_max_wait_ms": 50}
    )
    assert broker._linger == 0.005
    assert "session_timeout_ms" not in broker._producer_options
    assert broker._consumer_options["session_timeout_ms"] == 12_000
    assert broker._consumer_options["fetch_max_wait_ms"] == 50


@pytest.mark.parametrize(
    "options",
    [
        {"no_such_option": 1},
        {"acks": 1},
        {"producer_options": {"group_id": "x"}},
        {"consumer_options": {"enable_auto_commit": True}},
    ],
)
def test_unknown_or_reserved_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        KafkaBroker("h:1", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["max_attempts", "connect_timeout", "outage_timeout", "outage_buffer"])
def test_policy_options_must_be_positive(option: str) -> None:
    with pytest.raises(ValueError):
        KafkaBroker("h:1", **{option: 0})  # type: ignore[arg-type]


def test_names() -> None:
    assert group_id("workers", "orders.*") == "workers.orders.*"
    assert dead_letter_topic("orders.eu") == "_amb.dlq.orders.eu"
    long = dead_letter_topic("x" * 249)
    assert len(long) <= 249 and long.startswith("_amb.dlq.")
    assert long != dead_letter_topic("x" * 248 + "y")


def test_wildcards_never_match_the_adapters_own_topics() -> None:
    everything = topic_regex("#")
    assert everything.match("orders.eu")
    assert not everything.match("_amb.inbox.abc")
    assert not everything.match("_amb.dlq.orders")
    assert not topic_regex("*.*.*").match("_amb.inbox.abc")
    assert topic_regex("_amb.inbox.*").match("_amb.inbox.abc")
    assert not topic_regex("orders.*").match("orders.eu.x")  # anchored at the end


def test_the_commit_position_only_moves_over_finished_offsets() -> None:
    tracker = PartitionTracker()
    for offset in (10, 11, 12, 14):
        tracker.add(offset)
    assert not tracker.finish(12)
    assert tracker.position is None
    assert tracker.finish(10)
    assert tracker.position == 11
    assert tracker.finish(11)
    assert tracker.position == 13  # 12 was already done; 14 (after a gap) is not
    assert tracker.finish(14)
    assert tracker.position == 15
    assert len(tracker) == 0
