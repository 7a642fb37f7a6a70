"""The wire format every network adapter uses: one JSON object per message.

``{"amb":1,"id":"...","topic":"...","payload":{...},"timestamp":"2026-11-24T10:00:00.123456Z"}``,
UTF-8, then only the fields that differ from their defaults: ``"priority"`` (by name, NORMAL
omitted), ``"sender"``, ``"correlation_id"``, ``"reply_to"``, ``"ttl"`` (null omitted) and
``"metadata"`` (``{}`` omitted). The leading ``"amb":1`` marks an AMB envelope, so anything else
found on a topic (a foreign producer's data, garbage) is recognised and skipped. Readers accept
any key order and explicit defaults.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json, to_json

from amb_core.errors import InvalidMessageError
from amb_core.message import Message, MessagePriority, build_message

logger = logging.getLogger("amb")

WIRE_VERSION = 1
CONTENT_TYPE = "application/vnd.amb.v1+json"
_MARK = b'{"amb":1,'
_PRIORITY_NAMES = tuple(priority.name for priority in MessagePriority)
_PRIORITIES = {priority.name: priority for priority in MessagePriority}
_parse_timestamp = datetime.fromisoformat
_utc = timezone.utc
_NORMAL = MessagePriority.NORMAL


def encode(message: Message) -> bytes:
    """The message as wire bytes. The bus has already checked that payload and metadata are JSON."""
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
    return to_json(envelope)


def decode(data: bytes | bytearray | memoryview | str) -> Message:
    """The message in ``data``; `InvalidMessageError` if it is not an AMB envelope."""
    raw = data if type(data) is bytes else data.encode() if isinstance(data, str) else bytes(data)
    if not raw.startswith(_MARK):
        raise InvalidMessageError(f"not an AMB envelope: {raw[:60]!r}")
    try:
        fields = from_json(raw, allow_inf_nan=False)
    except ValueError as error:
        raise InvalidMessageError(f"garbled AMB envelope: {error}: {raw[:60]!r}") from error
    message = _as_written(fields)
    if message is not None:
        return message
    try:
        return Message.model_validate(fields)
    except ValidationError as error:
        raise InvalidMessageError(
            f"garbled AMB envelope: {error.errors()[0]['msg']}: {raw[:60]!r}"
        ) from error


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
    ):
        return None
    return build_message(
        id, topic, payload, priority, sender, correlation_id, reply_to, timestamp, ttl, metadata
    )


def decode_or_log(data: bytes | bytearray | memoryview | str, source: str) -> Message | None:
    """`decode`, or None after logging a warning that names ``source`` (a topic, a queue)."""
    try:
        return decode(data)
    except InvalidMessageError as error:
        logger.warning("skipped a message on %s: %s", source, error)
        return None
