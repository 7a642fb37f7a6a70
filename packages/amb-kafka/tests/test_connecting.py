"""Connecting: within connect_timeout whatever the peer does, nothing left open when it gives up,
errors that say what happened and never show a secret (issue 11, problems 5 and 11)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from aiokafka import errors as kafka  # type: ignore[import-untyped]

from amb_core import BrokerRefusedError, BrokerUnavailableError, MessageBus, MessageTooLargeError
from amb_kafka import KafkaBroker
from amb_kafka._errors import Boundary
from conftest import BOOTSTRAP

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-" + os.urandom(4).hex()


@asynccontextmanager
async def _peer(behaviour: str) -> AsyncIterator[tuple[int, list[bool]]]:
    """A local TCP server that accepts and never answers (``silent``), or answers in another
    protocol (``redis``: an error line, as Redis does to anything it cannot parse, then silence;
    ``http``: a response, then it hangs up). Yields its port and, per connection, whether it
    is over (closed by the client, or by the server for ``http``)."""
    connections: list[asyncio.StreamWriter] = []
    over: list[bool] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        over.append(False)
        index = len(over) - 1
        if behaviour == "redis":
            writer.write(b"-ERR unknown command\r\n")
        elif behaviour == "http":
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            writer.close()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client closes
        over[index] = True

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], over
    finally:
        for writer in connections:
            writer.close()
        server.close()


@pytest.mark.parametrize("behaviour", ["silent", "redis", "http"])
async def test_a_peer_that_is_not_kafka_is_unavailable_within_connect_timeout_and_nothing_stays_open(
    behaviour: str,
) -> None:
    async with _peer(behaviour) as (port, over):
        tasks_before = asyncio.all_tasks()
        bus = MessageBus.from_url(f"kafka://127.0.0.1:{port}", connect_timeout=1.5)
        started = time.monotonic()
        with anyio.fail_after(30):  # a safety net: the promise is connect_timeout
            with pytest.raises(BrokerUnavailableError) as raised:
                await bus.connect()
        assert time.monotonic() - started < 1.5 + 2
        assert f"127.0.0.1:{port}" in str(raised.value)
        # Nothing left behind: no task of ours, and every connection was closed by the client.
        with anyio.fail_after(5):
            while not all(over):  # noqa: ASYNC110 - the peer offers nothing to await
                await anyio.sleep(0.01)
        left = asyncio.all_tasks() - tasks_before - {asyncio.current_task()}
        assert not [task for task in left if "serve" not in getattr(task.get_coro(), "__qualname__", "")], (
            left
        )


async def test_nothing_listening_is_unavailable() -> None:
    bus = MessageBus.from_url("kafka://127.0.0.1:1", connect_timeout=5)
    with pytest.raises(BrokerUnavailableError) as raised:
        await bus.connect()
    assert isinstance(raised.value, ConnectionError)
    assert "Kafka at 127.0.0.1:1" in str(raised.value)


async def test_a_broker_that_refuses_the_authentication_is_refused_not_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SASL against the launcher's PLAINTEXT listener: the broker answers and refuses. A
    permanent problem, so not a ConnectionError that retry loops would spin on; and the password
    shows nowhere."""
    caplog.set_level(logging.DEBUG)
    adapter = KafkaBroker(
        BOOTSTRAP,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="agent",
        sasl_plain_password=SECRET,
        connect_timeout=10,
    )
    bus = MessageBus(adapter)
    with pytest.raises(BrokerRefusedError) as raised:
        await bus.connect()
    assert not isinstance(raised.value, ConnectionError)
    assert isinstance(raised.value, PermissionError)
    for text in (str(raised.value), repr(raised.value), repr(adapter), adapter.describe()):
        assert SECRET not in text
    assert all(SECRET not in record.getMessage() for record in caplog.records)


def test_credentials_in_the_url_are_refused_without_showing_them() -> None:
    with pytest.raises(ValueError) as raised:
        MessageBus.from_url(f"kafka://agent:{SECRET}@127.0.0.1:9092")
    assert SECRET not in str(raised.value)
    assert "agent:***@" in str(raised.value)


def test_the_error_boundary_maps_every_kind_of_failure() -> None:
    boundary = Boundary("Kafka at h:1", (SECRET,))
    cases = [
        (kafka.SaslAuthenticationFailed(f"bad password {SECRET}"), BrokerRefusedError),
        (kafka.TopicAuthorizationFailedError("orders"), BrokerRefusedError),
        (kafka.GroupAuthorizationFailedError("workers"), BrokerRefusedError),
        (kafka.MessageSizeTooLargeError(), MessageTooLargeError),
        (kafka.RecordListTooLargeError(), MessageTooLargeError),
        (kafka.KafkaConnectionError("refused"), BrokerUnavailableError),
        (kafka.RequestTimedOutError(), BrokerUnavailableError),
        (kafka.NotLeaderForPartitionError(), BrokerUnavailableError),
        (ConnectionRefusedError(111, "refused"), BrokerUnavailableError),
        (asyncio.TimeoutError(), BrokerUnavailableError),
        (kafka.InvalidReplicationFactorError(), BrokerRefusedError),
    ]
    for error, expected in cases:
        mapped = boundary.error(error, "doing something")
        assert type(mapped) is expected, (error, mapped)
        assert str(mapped).startswith("Kafka at h:1: doing something: ")
        assert SECRET not in str(mapped)
    with pytest.raises(BrokerRefusedError) as raised, boundary("authenticating"):
        raise kafka.SaslAuthenticationFailed(SECRET)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with pytest.raises(KeyError), boundary("looking"):  # not the client's: a bug, passed as it is
        raise KeyError("x")
