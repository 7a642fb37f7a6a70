"""The launcher's reading of brokers.json and of broker URLs (scripts/launcher): stdlib only, no
broker needed. Run by ``nox -s tests``; the launcher itself is exercised by every session that
starts, restarts or kills a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launcher import ServiceError, endpoint, env, main, native, probes, processes
from launcher.broker_table import BROKERS, Broker, read_broker_table
from launcher.endpoints import NAMES
from launcher.native import _kafka_properties
from launcher.paths import BROKER_TABLE


@pytest.fixture(autouse=True)
def no_url_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the table's defaults, whatever the shell exported."""
    for broker in BROKERS.values():
        monkeypatch.delenv(broker.url_variable, raising=False)


def test_the_launcher_knows_exactly_the_brokers_of_the_table() -> None:
    rows = json.loads(BROKER_TABLE.read_text(encoding="utf-8"))["brokers"]
    assert tuple(row["name"] for row in rows) == NAMES
    assert BROKERS["redis"] == Broker(
        "redis", "AMB_REDIS_URL", "redis://127.0.0.1:6379/0", "amb-redis", "amb_redis"
    )


def test_the_launcher_knows_how_to_run_every_broker_of_the_table() -> None:
    """A broker added to brokers.json needs a probe, a way to start it and its timeouts here."""
    for known in (
        probes._PROBES,
        native._STARTERS,
        native.READY_TIMEOUT,
        native.APT_PACKAGES,
        processes.STOP_TIMEOUT,
        processes._MARKERS,
    ):
        assert set(known) == set(NAMES)


def test_a_row_may_carry_more_than_the_launcher_reads(tmp_path: Path) -> None:
    table = tmp_path / "brokers.json"
    row = {"name": "x", "url_variable": "AMB_X_URL", "default_url": "x://h:1", "distribution": "amb-x"}
    table.write_text(json.dumps({"brokers": [{**row, "module": "amb_x", "scheme": "x"}]}))
    assert read_broker_table(table) == (Broker(**row, module="amb_x"),)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"no brokers": []}',
        '{"brokers": {"name": "x"}}',
        '{"brokers": [{"name": "x", "url_variable": "AMB_X_URL"}]}',
        '{"brokers": [{"name": "x", "url_variable": "", "default_url": "x://", "distribution": "d", "module": "m"}]}',
    ],
)
def test_a_malformed_table_is_an_error_naming_the_file(tmp_path: Path, content: str) -> None:
    table = tmp_path / "brokers.json"
    table.write_text(content)
    with pytest.raises(ValueError, match=r"brokers\.json"):
        read_broker_table(table)


def test_a_name_twice_is_an_error(tmp_path: Path) -> None:
    row = {"name": "x", "url_variable": "V", "default_url": "x://", "distribution": "d", "module": "m"}
    table = tmp_path / "brokers.json"
    table.write_text(json.dumps({"brokers": [row, row]}))
    with pytest.raises(ValueError, match="appears twice"):
        read_broker_table(table)


def test_without_url_variables_the_defaults_of_the_table_count() -> None:
    assert env() == {broker.url_variable: broker.default_url for broker in BROKERS.values()}
    kafka = endpoint("kafka")
    assert (kafka.host, kafka.port, kafka.address) == ("127.0.0.1", 9092, "127.0.0.1:9092")


def test_a_url_variable_moves_its_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMB_REDIS_URL", "redis://:s3cret@localhost:6394/0")
    redis = endpoint("redis")
    assert (redis.host, redis.port, redis.password, redis.local, redis.bind_host) == (
        "localhost",
        6394,
        "s3cret",
        True,
        "127.0.0.1",
    )
    assert env()["AMB_REDIS_URL"] == "redis://:s3cret@localhost:6394/0"


def test_rabbitmq_urls_give_credentials_and_virtual_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMB_RABBITMQ_URL", "amqp://amb:p%40ss@10.0.0.5:5694/tenant%2Fa")
    rabbitmq = endpoint("rabbitmq")
    assert (rabbitmq.username, rabbitmq.password, rabbitmq.vhost, rabbitmq.local) == (
        "amb",
        "p@ss",
        "tenant/a",
        False,
    )
    monkeypatch.setenv("AMB_RABBITMQ_URL", "amqp://127.0.0.1:5694/")
    rabbitmq = endpoint("rabbitmq")
    assert (rabbitmq.username, rabbitmq.password, rabbitmq.vhost) == ("guest", "guest", "/")


def test_kafka_urls_may_list_several_servers_the_first_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMB_KAFKA_URL", "kafka://127.0.0.1:9491,127.0.0.1:9591")
    assert endpoint("kafka").port == 9491
    monkeypatch.setenv("AMB_KAFKA_URL", "[::1]:9491")
    assert endpoint("kafka").address == "[::1]:9491"


def test_a_url_without_a_port_means_the_port_of_the_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMB_REDIS_URL", "redis://127.0.0.1/1")
    monkeypatch.setenv("AMB_RABBITMQ_URL", "amqp://127.0.0.1")
    monkeypatch.setenv("AMB_KAFKA_URL", "kafka://127.0.0.1")
    assert [endpoint(name).port for name in ("redis", "rabbitmq", "kafka")] == [6379, 5672, 9092]


def test_bad_ports_and_unknown_brokers_are_launcher_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMB_REDIS_URL", "redis://127.0.0.1:99999/0")
    with pytest.raises(ServiceError, match=r"AMB_REDIS_URL=.*bad port"):
        endpoint("redis")
    with pytest.raises(ServiceError, match="unknown broker 'nats'; expected one of redis, rabbitmq, kafka"):
        endpoint("nats")


def test_the_kafka_configuration_gets_every_placeholder_filled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMB_KAFKA_URL", "kafka://localhost:9491")
    properties = _kafka_properties(endpoint("kafka"), Path("/data"))
    assert "$" not in properties
    assert "listeners=PLAINTEXT://127.0.0.1:9491,CONTROLLER://127.0.0.1:9492\n" in properties
    assert "log.dirs=/data\n" in properties


def test_env_prints_one_line_per_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{broker.url_variable}={broker.default_url}" for broker in BROKERS.values()
    ]
