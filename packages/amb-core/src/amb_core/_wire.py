"""The wire format every network adapter uses: one JSON object per message.

``{"amb":1,"id":"...","topic":"...","payload":{...},"timestamp":"2026-11-24T10:00:00.123456Z"}``,
UTF-8, then only the fields that differ from their defaults: ``"priority"`` (by name, NORMAL
omitted), ``"sender"``, ``"correlation_id"``, ``"reply_to"``, ``"ttl"`` (null omitted),
``"metadata"`` (``{}`` omitted) and ``"key"`` (null omitted). The leading ``"amb":1`` marks an
AMB envelope, so anything else found on a topic (a foreign producer's data, garbage) is
recognised and skipped. Readers accept any key order and explicit defaults.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json, to_json

from amb_core._errors import InvalidMessageError, MessageTooLargeError
from amb_core._logs import throttled
from amb_core._message import Message, MessagePriority, build_message

logger = logging.getLogger("amb.wire")

WIRE_VERSION = 1
CONTENT_TYPE = "application/vnd.amb.v1+json"
_MARK = b'{"amb":1,'
_PRIORITY_NAMES = tuple(priority.name for priority in MessagePriority)
_PRIORITIES = {priority.name: priority for priority in MessagePriority}
_parse_timestamp = datetime.fromisoformat
_utc = timezone.utc
_NORMAL = MessagePriority.NORMAL


def encode(message: Message, max_size: int | None = None) -> bytes:
    """The message as wire bytes. The bus has already checked that payload and metadata are JSON.

    With ``max_size`` (the adapter's ``max_message_size``), an envelope longer than that raises
    `MessageTooLargeError` instead, so nothing the broker would refuse is ever sent.
    """
    fields = message.__dict__
    envelope = {
        "amb": WIRE_VERSION,
        "id": fields["id"],
        "topic": fields["topic"],
        "payload": fields["payload"],
        "timestamp": fields["timestamp"],
    }
    # Defaults stay off the wire: most messages are a topic and a payload, and every key costs
    # on both ends of every message.
    if fields["priority"] is not _NORMAL:
        envelope["priority"] = _PRIORITY_NAMES[fields["priority"]]
    if fields["sender"] is not None:
        envelope["sender"] = fields["sender"]
    if fields["correlation_id"] is not None:
        envelope["correlation_id"] = fields["correlation_id"]
    if fields["reply_to"] is not None:
        envelope["reply_to"] = fields["reply_to"]
    if fields["ttl"] is not None:
        envelope["ttl"] = fields["ttl"]
    if fields["metadata"]:
        envelope["metadata"] = fields["metadata"]
    if fields["key"] is not None:
        envelope["key"] = fields["key"]
    data = to_json(envelope)
    if max_size is not None and len(data) > max_size:
        raise MessageTooLargeError(
            f"message {fields['id']} on {fields['topic']} is {len(data)} bytes encoded, over the "
            f"{max_size} bytes the adapter's broker takes (its max_message_size); nothing was sent"
        )
    return data


def decode(data: bytes | bytearray | memoryview | str) -> Message:
    """The message in ``data``; `InvalidMessageError`, and nothing else, for anything that is
    not a valid AMB envelope, whatever the bytes (hostile ones included)."""
    try:
        raw = data if type(data) is bytes else data.encode() if isinstance(data, str) else bytes(data)
    except Exception as error:  # a str with lone surrogates, say
        raise InvalidMessageError(f"not an AMB envelope: {error}") from None
    if not raw.startswith(_MARK):
        raise InvalidMessageError(f"not an AMB envelope: {raw[:60]!r}")
    try:
        fields = from_json(raw, allow_inf_nan=False)
        message = _as_written(fields)
        if message is not None:
            return message
        return Message.model_validate(fields)
    except ValidationError as error:
        reason = error.errors()[0]["msg"]
    except Exception as error:
        # Not only ValueError: a timestamp at the edge of the calendar overflows when made
        # UTC, and a reader must survive whatever a hostile producer writes.
        reason = f"{type(error).__name__}: {error}"
    raise InvalidMessageError(f"garbled AMB envelope ({reason[:200]}): {raw[:60]!r}")


def _as_written(fields: dict[str, Any]) -> Message | None:
    """The message, if ``fields`` are what `encode` writes; None for anything else (an envelope
    from another implementation, a garbled one), which pydantic then validates.

    This is every network adapter's receive hot path, and pydantic's validation costs more than
    parsing the JSON. tests/test_wire.py checks that both paths agree.
    """
    get = fields.get
    try:
        id, topic, payload = fields["id"], fields["topic"], fields["payload"]
        # "...Z" parses straight to timezone.utc on Python 3.11+ (3.10 takes pydantic's path).
        timestamp = _parse_timestamp(fields["timestamp"])
        priority = _PRIORITIES[get("priority", "NORMAL")]
    except (KeyError, TypeError, ValueError):
        return None
    sender, correlation_id, reply_to, ttl = get("sender"), get("correlation_id"), get("reply_to"), get("ttl")
    key = get("key")
    metadata = get("metadata", {})  # a written null is no dict: pydantic then rejects it
    if (
        type(id) is not str
        or type(topic) is not str
        or type(payload) is not dict
        or type(metadata) is not dict
        or timestamp.tzinfo is not _utc
        or (sender is not None and type(sender) is not str)
        or (correlation_id is not None and type(correlation_id) is not str)
        or (reply_to is not None and type(reply_to) is not str)
        or (ttl is not None and ((type(ttl) is not float and type(ttl) is not int) or ttl <= 0))
        or (key is not None and type(key) is not str)
    ):
        return None
    return build_message(
        id, topic, payload, priority, sender, correlation_id, reply_to, timestamp, ttl, metadata, key
    )


def decode_or_log(data: bytes | bytearray | memoryview | str, source: str) -> Message | None:
    """`decode`, or None after logging why (see `log_invalid`)."""
    try:
        return decode(data)
    except InvalidMessageError as error:
        log_invalid(source, error)
        return None


def log_invalid(source: str, error: InvalidMessageError, outcome: str = "skipped it") -> None:
    """Log, once, that what arrived on ``source`` (a topic, a queue, a stream) is not a valid
    envelope, why, and what was done with it. A hostile producer can send floods of these: past
    a few lines a minute per source they go to DEBUG, and the next WARNING says how many were
    held back."""
    throttled(
        logger,
        "invalid:" + source,
        "a message on %s is not a valid AMB envelope (%s); %s",
        source,
        error,
        outcome,
    )
