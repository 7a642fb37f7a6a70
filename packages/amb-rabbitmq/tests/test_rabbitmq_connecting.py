"""Connecting (issue 11, problem 11): every failure is one of amb-core's errors, with a reason,
within ``connect_timeout``, and never shows the password; a cancelled connect leaves nothing
open."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote, urlsplit

import anyio
import pytest

from amb_core import BrokerRefusedError, BrokerUnavailableError, MessageBus
from amb_core.testing import FaultyProxy
from amb_rabbitmq import RabbitMQBroker
from conftest import URL, WAIT, Admin

pytestmark = pytest.mark.anyio


def _with(url: str, *, password: str | None = None, vhost: str | None = None, port: int | None = None) -> str:
    parts = urlsplit(url)
    user = parts.username or "guest"
    secret = quote(password, safe="") if password is not None else parts.password or "guest"
    path = f"/{quote(vhost, safe='')}" if vhost is not None else parts.path or "/"
    return f"{parts.scheme}://{user}:{secret}@{parts.hostname}:{port or parts.port}{path}"


async def test_an_unknown_vhost_is_refused_clearly() -> None:
    vhost = f"no-such-vhost-{uuid.uuid4().hex[:8]}"
    bus = MessageBus(RabbitMQBroker(_with(URL, vhost=vhost), connect_timeout=10))
    with pytest.raises(BrokerRefusedError) as raised:
        await bus.connect()
    message = str(raised.value)
    assert not isinstance(raised.value, ConnectionError)
    assert message.startswith("RabbitMQ at amqp://guest:***@")
    assert f"virtual host {vhost!r} does not exist or access to it is refused" in message
    assert "Connection.Close object" not in message


async def test_wrong_credentials_are_refused_and_the_password_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # aio-pika's and aiormq's own lines too
    secret = f"p@ss/w:rd%{uuid.uuid4().hex[:8]}"
    shown = (secret, quote(secret, safe=""))
    adapter = RabbitMQBroker(_with(URL, password=secret), connect_timeout=10)
    bus = MessageBus(adapter)
    with pytest.raises(BrokerRefusedError) as raised:
        await bus.connect()
    assert not isinstance(raised.value, ConnectionError)
    assert "wrong user name or password" in str(raised.value)
    texts = [str(raised.value), repr(raised.value), repr(adapter), adapter.describe()]
    texts += [record.getMessage() for record in caplog.records]
    assert caplog.records  # the client library did log something about it
    for text in texts:
        assert not any(secret_form in text for secret_form in shown), text


@asynccontextmanager
async def _silent_peer() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


async def _unavailable_within(url: str, connect_timeout: float) -> BrokerUnavailableError:
    bus = MessageBus(RabbitMQBroker(url, connect_timeout=connect_timeout))
    with anyio.fail_after(connect_timeout + 5):  # the promise is connect_timeout; a margin for load
        with pytest.raises(BrokerUnavailableError) as raised:
            await bus.connect()
    assert not bus.is_connected
    assert str(raised.value).startswith("RabbitMQ at amqp://guest:***@127.0.0.1:")
    return raised.value


async def test_a_peer_that_never_answers_is_unavailable_within_connect_timeout() -> None:
    async with _silent_peer() as port:
        error = await _unavailable_within(_with(URL, port=port), 1.0)
    assert "connect_timeout" in str(error)


async def test_a_peer_that_is_not_rabbitmq_is_unavailable_within_connect_timeout() -> None:
    # Redis reads the AMQP header as the start of an inline command and waits for the rest.
    redis_port = urlsplit(os.environ.get("AMB_REDIS_URL", "redis://127.0.0.1:6379")).port or 6379
    error = await _unavailable_within(_with(URL, port=redis_port), 1.0)
    assert str(error).rstrip().rpartition(":")[2].strip()  # a reason after the last colon


async def test_nothing_listening_is_unavailable_with_a_reason() -> None:
    error = await _unavailable_within(_with(URL, port=1), 2.0)
    assert "Connect call failed" in str(error) or "refused" in str(error).lower()


async def test_a_cancelled_connect_leaves_no_connection_open(
    amb_proxy: FaultyProxy, prefix: str, admin: Admin
) -> None:
    # The bus cancels connect() after connect_timeout; cancel it here at every stage of the
    # handshake, channels and declarations, and check the proxy sees every connection closed.
    url = amb_proxy.url(URL)
    outcomes = {"cancelled": 0, "connected": 0}
    for step in range(80):
        bus = MessageBus(RabbitMQBroker(url, exchange=prefix))
        with anyio.move_on_after(step * 0.0002):  # a whole connect takes some 10 ms here
            await bus.connect()
        if bus.is_connected:
            outcomes["connected"] += 1
            await bus.disconnect()
        else:
            outcomes["cancelled"] += 1
        with anyio.fail_after(WAIT):
            while amb_proxy.open_connections:  # noqa: ASYNC110 - the proxy has no event to await
                await anyio.sleep(0.01)
    assert outcomes["cancelled"] and amb_proxy.accepted, outcomes
