"""Connecting and reconnecting to peers that misbehave (issue 11, problem 8: a peer that accepts
TCP and never answers made `connect` hang for good, whatever timeout was passed)."""

from __future__ import annotations

import asyncio
import logging
import time

import anyio
import pytest

from amb_core import BrokerUnavailableError, Message, MessageBus
from amb_core.testing import BusFactory, FaultyProxy, Recorder
from amb_redis import RedisBroker
from conftest import URL, WAIT

pytestmark = pytest.mark.anyio


async def test_connecting_to_a_silent_peer_gives_up_within_connect_timeout_and_leaves_nothing_open(
    amb_proxy: FaultyProxy,
) -> None:
    amb_proxy.mode = "silent"
    before = asyncio.all_tasks()
    bus = MessageBus.from_url(amb_proxy.url(URL), connect_timeout=0.5)
    started = time.monotonic()
    with anyio.fail_after(WAIT):  # a safety net: it used to hang here for good
        with pytest.raises(BrokerUnavailableError) as raised:
            await bus.connect()
    assert time.monotonic() - started < WAIT
    assert "Redis at 127.0.0.1:" in str(raised.value) and "connect_timeout" in str(raised.value)
    # The cancelled handshake closed its socket (the peer sees it go) and left no task behind.
    assert len(amb_proxy.silent_closed) == 1
    with anyio.fail_after(WAIT):
        await amb_proxy.silent_closed[0].wait()
    assert {task for task in asyncio.all_tasks() if not task.done()} <= before | {asyncio.current_task()}


async def test_a_connect_cancelled_after_the_first_connection_closes_it(amb_proxy: FaultyProxy) -> None:
    """`connect` opens two connections; cancelled while the second one hangs, it closes the first."""
    broker = RedisBroker(amb_proxy.url(URL), connect_timeout=0.5)
    first = amb_proxy.expect("forward")
    second = amb_proxy.expect("silent")

    async def connect() -> None:
        await broker.connect()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(connect)
        await first.wait()
        amb_proxy.mode = "silent"
        await second.wait()
        tasks.cancel_scope.cancel()
    assert broker._pipe is None and broker._pubsub is None
    with anyio.fail_after(WAIT):
        await amb_proxy.silent_closed[0].wait()
        await amb_proxy.forward_closed[0].wait()  # the first one, which had reached Redis
    await broker.disconnect()  # nothing to do, and no error


async def test_reconnecting_to_a_silent_peer_gives_up_and_tries_again(
    amb_proxy: FaultyProxy, amb_make_bus: BusFactory, amb_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await amb_make_bus(url=amb_proxy.url(URL), connect_timeout=0.5)
    plain, grouped = Recorder(timeout=WAIT), Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, plain)
    await bus.subscribe(amb_topic, grouped, group="workers")
    link = bus.adapter.link
    assert link is not None
    silent = amb_proxy.expect("silent")
    amb_proxy.mode = "silent"
    amb_proxy.cut()
    await silent.wait()  # a reconnect attempt is now stuck on a peer that never answers
    amb_proxy.mode = "forward"
    await link.wait_up(WAIT)  # used to wait for that attempt for good
    await bus.publish(amb_topic, {"after": True}, wait_for_confirmation=True)
    await plain.wait_for(1)
    await grouped.wait_for(1)
    with anyio.fail_after(WAIT):
        for closed in amb_proxy.silent_closed:
            await closed.wait()  # each attempt that gave up closed its socket


async def test_a_refusing_peer_is_unavailable_not_a_hang(amb_proxy: FaultyProxy) -> None:
    amb_proxy.mode = "refuse"
    bus = MessageBus.from_url(amb_proxy.url(URL), connect_timeout=5)
    with anyio.fail_after(WAIT):
        with pytest.raises(BrokerUnavailableError) as raised:
            await bus.connect()
    assert "Redis at 127.0.0.1:" in str(raised.value)
    assert not isinstance(raised.value, PermissionError)


async def test_redis_py_connect_timeout_follows_connect_timeout() -> None:
    broker = RedisBroker("redis://127.0.0.1:6379/0", connect_timeout=3.5)
    assert broker._connector.kwargs["socket_connect_timeout"] == 3.5
    assert broker._connector.kwargs["retry"].get_retries() == 0  # redis-py never retries on its own
    explicit = RedisBroker("redis://127.0.0.1:6379/0", connect_timeout=3.5, socket_connect_timeout=1)
    assert explicit._connector.kwargs["socket_connect_timeout"] == 1


async def test_no_adapter_warning_during_a_lost_connection_only_the_links(
    amb_proxy: FaultyProxy, amb_make_bus: BusFactory, amb_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await amb_make_bus(url=amb_proxy.url(URL))
    grouped = Recorder(timeout=WAIT)
    await bus.subscribe(amb_topic, grouped, group="workers")
    link = bus.adapter.link
    assert link is not None
    caplog.clear()
    caplog.set_level(logging.WARNING)
    refused = amb_proxy.expect("refuse")
    amb_proxy.mode = "refuse"
    amb_proxy.cut()
    await refused.wait()
    assert not link.up
    with pytest.raises(BrokerUnavailableError):  # the bus keeps the message meanwhile
        await bus.adapter.publish(_message(amb_topic), confirm=False)
    kept = await bus.publish(amb_topic, {"kept": True})  # kept by the bus, sent once it is back
    amb_proxy.mode = "forward"
    await link.wait_up(WAIT)
    [message] = await grouped.wait_for(1)
    assert message.id == kept
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2, lines
    assert "lost the connection to Redis at 127.0.0.1:" in lines[0]
    assert "is back after" in lines[1]


def _message(topic: str) -> Message:
    return Message(id="direct-1", topic=topic, payload={})
