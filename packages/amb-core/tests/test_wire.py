"""The envelope on the wire: what `encode` writes, and that `decode`'s two paths agree."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from amb_core import InvalidMessageError, Message, MessagePriority
from amb_core.adapter import decode, decode_or_log, encode

PLAIN = Message(
    id="1", topic="a.b", payload={"k": "v"}, timestamp=datetime(2026, 1, 1, 10, 0, 0, 5, timezone.utc)
)
FULL = Message(
    id="2",
    topic="a.b",
    payload={"é": ["ü", 1.5, None], "n": {"deep": [1, {"x": True}]}},
    priority=MessagePriority.URGENT,
    sender="agent-1",
    correlation_id="c-1",
    reply_to="_amb.inbox.x",
    ttl=2,
    metadata={"x": 1},
    key="conversation-7",
)


def test_defaults_stay_off_the_wire() -> None:
    assert encode(PLAIN) == (
        b'{"amb":1,"id":"1","topic":"a.b","payload":{"k":"v"},"timestamp":"2026-01-01T10:00:00.000005Z"}'
    )
    written = json.loads(encode(FULL))
    assert list(written)[:5] == ["amb", "id", "topic", "payload", "timestamp"]
    assert written["priority"] == "URGENT" and written["ttl"] == 2 and written["metadata"] == {"x": 1}
    assert written["key"] == "conversation-7"


@pytest.mark.parametrize(
    "message", [PLAIN, FULL, Message(id="3", topic="t", ttl=0.25)], ids=["plain", "full", "ttl"]
)
def test_round_trip(message: Message) -> None:
    data = encode(message)
    assert data.startswith(b'{"amb":1,')
    for form in (data, data.decode(), bytearray(data), memoryview(data)):
        decoded = decode(form)
        assert decoded == message
        assert decoded.model_dump() == message.model_dump()


@pytest.mark.parametrize("message", [PLAIN, FULL], ids=["plain", "full"])
def test_the_fast_path_equals_pydantic_validation(message: Message) -> None:
    data = encode(message)
    assert decode(data) == Message.model_validate_json(data)
    # The same envelope with every default written out, and the keys in another order.
    fields: dict[str, Any] = json.loads(data)
    explicit = {**message.model_dump(mode="json"), **fields}
    reordered = {"amb": 1, **dict(reversed(list(explicit.items())))}
    assert decode(json.dumps(reordered, separators=(",", ":")).encode()) == message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b'{"id": "1", "topic": "t"}',
        b'{"amb":1,"id":1}',
        b'{"amb":1,',
        b'{"amb":1,"id":"1","topic":"t","payload":[],"timestamp":"2026-01-01T10:00:00Z"}',
        b'{"amb":1,"id":"1","topic":"t","payload":{},"timestamp":"yesterday"}',
        b'{"amb":1,"id":"1","topic":"t","payload":{},"timestamp":"2026-01-01T10:00:00Z","ttl":-1}',
        b'{"amb":1,"id":"1","topic":"t","payload":{},"timestamp":"2026-01-01T10:00:00Z","priority":"SOON"}',
        b'{"amb":1,"id":"1","topic":"t","payload":{},"timestamp":"2026-01-01T10:00:00Z","metadata":null}',
        b'{"amb":1,"id":"1","topic":"t","payload":{"x":NaN},"timestamp":"2026-01-01T10:00:00Z"}',
    ],
)
def test_foreign_or_garbled_bytes_are_recognised(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(InvalidMessageError):
        decode(data)
    assert decode_or_log(data, "some.topic") is None
    assert "some.topic" in caplog.text


@pytest.mark.parametrize(
    "data",
    [
        b'{"amb":1,"id":"1","topic":"t","priority":2,"timestamp":"2026-01-01T12:00:00+02:00"}',
        b'{"amb":1,"id":"1","topic":"t","payload":{},"metadata":{},"priority":"HIGH","sender":null,'
        b'"correlation_id":null,"reply_to":null,"timestamp":"2026-01-01T12:00:00+02:00","ttl":null}',
        b'{"amb":1,"id":"1","topic":"t","payload":{},"metadata":{},"priority":"high","sender":null,'
        b'"correlation_id":null,"reply_to":null,"timestamp":"2026-01-01T10:00:00","ttl":null}',
        b'{"amb":1,"id":"1","topic":"t","payload":{},"priority":"HIGH","timestamp":"2026-01-01T10:00:00Z"}',
    ],
    ids=["other-implementation", "offset", "naive-lowercase", "as-written"],
)
def test_envelopes_written_otherwise_are_read_too(data: bytes) -> None:
    message = decode(data)
    assert message.priority is MessagePriority.HIGH
    assert message.timestamp == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    assert message.timestamp.tzinfo is timezone.utc
    assert message.payload == {} and message.metadata == {}


_VALID = {
    "amb": 1,
    "id": "m-1",
    "topic": "agent.task",
    "payload": {"x": 1},
    "timestamp": "2026-01-01T10:00:00Z",
    "priority": "HIGH",
    "sender": "agent-1",
    "correlation_id": "c-1",
    "reply_to": "_amb.inbox.x",
    "key": "k-1",
    "ttl": 5,
    "metadata": {"k": "v"},
}
_HOSTILE_VALUES: list[object] = [
    None,
    True,
    -1,
    0,
    2**64,
    -(2**64),
    1e308,
    -1e-308,
    "",
    "x" * 10_000,
    "\udcff",
    [],
    {},
    [[[]]],
    {"nested": {"deeper": [1, 2, {"a": None}]}},
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59.999999+00:00",
    "2026-13-45T99:99:99Z",
    "URGENT",
    "urgent",
    "SOON",
]


@pytest.mark.parametrize("field", sorted(_VALID))
def test_every_field_mutated_gives_a_message_or_an_invalid_message_error(field: str) -> None:
    """Whatever a hostile producer writes in any field, decoding ends in a `Message` or in
    `InvalidMessageError`, never in another exception (one used to be OverflowError, which
    killed a consumer)."""
    for value in _HOSTILE_VALUES:
        envelope = {**_VALID, field: value}
        try:
            data = json.dumps(envelope).encode()
        except (TypeError, ValueError):
            continue
        with contextlib.suppress(InvalidMessageError):
            decode(data)


def test_random_byte_mutations_never_raise_anything_but_invalid_message_error() -> None:
    import random

    rng = random.Random(11)
    valid = json.dumps(_VALID, separators=(",", ":")).encode()
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(data))
            data[position] = rng.randrange(256)
        with contextlib.suppress(InvalidMessageError):
            decode(bytes(data))


@pytest.mark.parametrize(
    "data",
    [
        b'{"amb":1,"id":"1","topic":"t","payload":{},"timestamp":"9999-12-31T23:59:59-23:59"}',
        b'{"amb":1,"id":"1","topic":"t","payload":{"s":"\xff\xfe"},"timestamp":"2026-01-01T10:00:00Z"}',
        b'{"amb":1,"id":"1","topic":"t","payload":' + b"[" * 100_000 + b"]" * 100_000 + b',"timestamp":"x"}',
        b'{"amb":1,"id":"1","topic":"t","payload":{"big":"' + b"x" * 50_000_000 + b'"},"timestamp":[]}',
    ],
    ids=["overflowing-timestamp", "invalid-utf8", "100000-deep", "50MB-string-field"],
)
def test_hostile_envelopes_are_invalid_messages(data: bytes) -> None:
    with pytest.raises(InvalidMessageError) as raised:
        decode(data)
    assert len(str(raised.value)) < 500, "the reason quotes the start of the data, not all of it"


def test_a_str_that_is_not_valid_unicode_is_an_invalid_message() -> None:
    with pytest.raises(InvalidMessageError):
        decode('{"amb":1,\udcff')
