"""Bad input gets a clear error and loses nothing; a failing handler or a foreign message does
not stop a subscription; a closed bus says so."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from amb_core import (
    BusClosedError,
    InvalidPayloadError,
    InvalidTopicError,
    Message,
    MessageBus,
)
from conftest import URL, Received

pytestmark = pytest.mark.anyio

BAD_TOPICS: list[Any] = [
    "",
    "a..b",
    ".a",
    "a.",
    "a b",
    "a/b",
    "a.*",
    "a.#",
    "é",
    "x" * 250,
    None,
    7,
]
BAD_PATTERNS: list[Any] = ["", "a..b", "a.**", "a*", "a.#b", "a b", "x" * 250, None]
BAD_PAYLOADS: list[Any] = [
    {"when": object()},
    {"nan": float("nan")},
    {"inf": [float("inf")]},
    {1: "int key"},
    {"nested": {("tuple", "key"): 1}},
    {"bytes": b"raw"},
    {"set": {1, 2}},
    ["not", "an", "object"],
    "text",
]


@pytest.mark.parametrize("bad", BAD_TOPICS, ids=repr)
async def test_an_invalid_topic_is_refused_before_sending(bus: MessageBus, bad: Any) -> None:
    with pytest.raises(InvalidTopicError) as raised:
        await bus.publish(bad, {"n": 1})
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("bad", BAD_PATTERNS, ids=repr)
async def test_an_invalid_pattern_is_refused(
    bus: MessageBus, bad: Any, received: Callable[[], Received]
) -> None:
    with pytest.raises(InvalidTopicError):
        await bus.subscribe(bad, received())


@pytest.mark.parametrize("bad", BAD_PAYLOADS, ids=repr)
async def test_an_unserialisable_payload_is_refused_and_nothing_is_sent(
    bus: MessageBus, topic: str, bad: Any, received: Callable[[], Received]
) -> None:
    got = received()
    await bus.subscribe(topic, got)
    with pytest.raises((TypeError, ValueError)) as raised:
        await bus.publish(topic, bad)
    assert isinstance(raised.value, InvalidPayloadError)
    with pytest.raises((TypeError, ValueError)):
        await bus.publish(
            topic,
            {"fine": 1},
            metadata=bad if isinstance(bad, dict) else {"x": object()},
        )
    await bus.publish(topic, {"after": True})
    await got.wait_for(1)
    assert got.payloads == [{"after": True}]


async def test_a_failing_handler_is_logged_and_the_subscription_goes_on(
    bus: MessageBus,
    topic: str,
    received: Callable[[], Received],
    caplog: pytest.LogCaptureFixture,
) -> None:
    got = received()

    async def flaky(message: Message) -> None:
        if message.payload["n"] == 0:
            raise RuntimeError("handler broke")
        await got(message)

    await bus.subscribe(topic, flaky)
    for n in range(3):
        await bus.publish(topic, {"n": n}, key=topic)
    await got.wait_for(2)
    assert got.payloads == [{"n": 1}, {"n": 2}]
    failures = [r for r in caplog.records if r.name.startswith("amb") and r.levelno == logging.ERROR]
    assert failures and failures[0].exc_info is not None
    assert "handler broke" in str(failures[0].exc_info[1])


async def test_a_failed_grouped_message_is_redelivered_if_the_adapter_says_so(
    bus: MessageBus, topic: str, received: Callable[[], Received]
) -> None:
    got = received()
    attempts: dict[int, int] = {}

    async def fails_first_time(message: Message) -> None:
        n = message.payload["n"]
        attempts[n] = attempts.get(n, 0) + 1
        if n == 0 and attempts[n] == 1:
            raise RuntimeError("first attempt fails")
        await got(message)

    await bus.subscribe(topic, fails_first_time, group="workers")
    await bus.publish(topic, {"n": 0}, key=topic)
    await bus.publish(topic, {"n": 1}, key=topic)
    if bus.capabilities.redelivers_failed:
        await got.wait_for(2)
        assert sorted(p["n"] for p in got.payloads) == [0, 1]
        assert attempts[0] == 2
    else:
        await got.wait_for(1)
        await bus.publish(topic, {"n": 2}, key=topic)
        await got.wait_for(2)
        assert got.payloads == [{"n": 1}, {"n": 2}]
        assert attempts[0] == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"not json at all",
        b'{"foreign": "producer"}',
        b'{"amb":1,"id":5}',
        b"\xff\xfe\x00garbage",
        b"",
    ],
    ids=["text", "foreign-json", "garbled-envelope", "binary", "empty"],
)
@pytest.mark.parametrize("group", [None, "workers"])
async def test_a_foreign_or_garbled_message_is_logged_and_skipped(
    bus: MessageBus,
    topic: str,
    raw: bytes,
    group: str | None,
    received: Callable[[], Received],
    caplog: pytest.LogCaptureFixture,
) -> None:
    got = received()
    await bus.subscribe(topic, got, group=group)
    await bus.adapter.publish_raw(topic, raw)
    await bus.publish(topic, {"after": True})
    await got.wait_for(1)
    assert got.payloads == [{"after": True}]
    assert any(
        r.name.startswith("amb") and r.levelno == logging.WARNING and topic in r.getMessage()
        for r in caplog.records
    )


async def test_a_bus_that_is_not_connected_says_so(topic: str, received: Callable[[], Received]) -> None:
    bus = MessageBus.from_url(URL)
    with pytest.raises(BusClosedError) as raised:
        await bus.publish(topic, {"n": 1})
    assert isinstance(raised.value, ConnectionError)
    await bus.connect()
    await bus.disconnect()
    for call in (
        bus.publish(topic, {"n": 1}),
        bus.subscribe(topic, received()),
        bus.request(topic, {"n": 1}, timeout=1),
    ):
        with pytest.raises(ConnectionError):
            await call


async def test_a_closed_bus_can_connect_again(topic: str, received: Callable[[], Received]) -> None:
    bus = MessageBus.from_url(URL)
    async with bus:
        pass
    async with bus:
        got = received()
        await bus.subscribe(topic, got)
        await bus.publish(topic, {"n": 1})
        await got.wait_for(1)
