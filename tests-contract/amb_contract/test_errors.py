"""Bad input gets a clear error and loses nothing; a failing handler or a foreign message does
not stop a subscription; a closed bus says so."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from amb_contract.suite import URL
from amb_core import (
    BusClosedError,
    InvalidPayloadError,
    InvalidTopicError,
    Message,
    MessageBus,
)
from amb_core.testing import Recorder

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
async def test_an_invalid_topic_is_refused_before_sending(amb_bus: MessageBus, bad: Any) -> None:
    with pytest.raises(InvalidTopicError) as raised:
        await amb_bus.publish(bad, {"n": 1})
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("bad", BAD_PATTERNS, ids=repr)
async def test_an_invalid_pattern_is_refused(
    amb_bus: MessageBus, bad: Any, amb_received: Callable[[], Recorder]
) -> None:
    with pytest.raises(InvalidTopicError):
        await amb_bus.subscribe(bad, amb_received())


@pytest.mark.parametrize("bad", BAD_PAYLOADS, ids=repr)
async def test_an_unserialisable_payload_is_refused_and_nothing_is_sent(
    amb_bus: MessageBus, amb_topic: str, bad: Any, amb_received: Callable[[], Recorder]
) -> None:
    got = amb_received()
    await amb_bus.subscribe(amb_topic, got)
    with pytest.raises((TypeError, ValueError)) as raised:
        await amb_bus.publish(amb_topic, bad)
    assert isinstance(raised.value, InvalidPayloadError)
    with pytest.raises((TypeError, ValueError)):
        await amb_bus.publish(
            amb_topic,
            {"fine": 1},
            metadata=bad if isinstance(bad, dict) else {"x": object()},
        )
    await amb_bus.publish(amb_topic, {"after": True})
    await got.wait_for(1)
    assert got.payloads == [{"after": True}]


async def test_a_failing_handler_is_logged_and_the_subscription_goes_on(
    amb_bus: MessageBus,
    amb_topic: str,
    amb_received: Callable[[], Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    got = amb_received()

    async def flaky(message: Message) -> None:
        if message.payload["n"] == 0:
            raise RuntimeError("handler broke")
        await got(message)

    await amb_bus.subscribe(amb_topic, flaky)
    for n in range(3):
        await amb_bus.publish(amb_topic, {"n": n}, key=amb_topic)
    await got.wait_for(2)
    assert got.payloads == [{"n": 1}, {"n": 2}]
    failures = [r for r in caplog.records if r.name.startswith("amb") and r.levelno == logging.ERROR]
    assert failures and failures[0].exc_info is not None
    assert "handler broke" in str(failures[0].exc_info[1])


async def test_a_failed_grouped_message_is_redelivered_if_the_adapter_says_so(
    amb_bus: MessageBus, amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    got = amb_received()
    attempts: dict[int, int] = {}

    async def fails_first_time(message: Message) -> None:
        n = message.payload["n"]
        attempts[n] = attempts.get(n, 0) + 1
        if n == 0 and attempts[n] == 1:
            raise RuntimeError("first attempt fails")
        await got(message)

    await amb_bus.subscribe(amb_topic, fails_first_time, group="workers")
    await amb_bus.publish(amb_topic, {"n": 0}, key=amb_topic)
    await amb_bus.publish(amb_topic, {"n": 1}, key=amb_topic)
    if amb_bus.capabilities.redelivers_failed:
        await got.wait_for(2)
        assert sorted(p["n"] for p in got.payloads) == [0, 1]
        assert attempts[0] == 2
    else:
        await got.wait_for(1)
        await amb_bus.publish(amb_topic, {"n": 2}, key=amb_topic)
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
    amb_bus: MessageBus,
    amb_topic: str,
    raw: bytes,
    group: str | None,
    amb_received: Callable[[], Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    got = amb_received()
    await amb_bus.subscribe(amb_topic, got, group=group)
    await amb_bus.adapter.publish_raw(amb_topic, raw)
    await amb_bus.publish(amb_topic, {"after": True})
    await got.wait_for(1)
    assert got.payloads == [{"after": True}]
    assert any(
        r.name.startswith("amb") and r.levelno == logging.WARNING and amb_topic in r.getMessage()
        for r in caplog.records
    )


async def test_a_bus_that_is_not_connected_says_so(
    amb_topic: str, amb_received: Callable[[], Recorder]
) -> None:
    bus = MessageBus.from_url(URL)
    with pytest.raises(BusClosedError) as raised:
        await bus.publish(amb_topic, {"n": 1})
    assert isinstance(raised.value, ConnectionError)
    await bus.connect()
    await bus.disconnect()
    for call in (
        bus.publish(amb_topic, {"n": 1}),
        bus.subscribe(amb_topic, amb_received()),
        bus.request(amb_topic, {"n": 1}, timeout=1),
    ):
        with pytest.raises(ConnectionError):
            await call


async def test_a_closed_bus_can_connect_again(amb_topic: str, amb_received: Callable[[], Recorder]) -> None:
    bus = MessageBus.from_url(URL)
    async with bus:
        pass
    async with bus:
        got = amb_received()
        await bus.subscribe(amb_topic, got)
        await bus.publish(amb_topic, {"n": 1})
        await got.wait_for(1)
