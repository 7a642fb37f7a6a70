"""The envelope on the wire: what `encode` writes, and that `decode`'s two paths agree."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from amb_core import InvalidMessageError, Message, MessagePriority
from amb_core.wire import decode, decode_or_log, encode

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
)


def test_defaults_stay_off_the_wire() -> None:
    assert encode(PLAIN) == (
        b'{"amb":1,"id":"1","topic":"a.b","payload":{"k":"v"},"timestamp":"2026-01-01T10:00:00.000005Z"}'
    )
    written = json.loads(encode(FULL))
    assert list(written)[:5] == ["amb", "id", "topic", "payload", "timestamp"]
    assert written["priority"] == "URGENT" and written["ttl"] == 2 and written["metadata"] == {"x": 1}


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
