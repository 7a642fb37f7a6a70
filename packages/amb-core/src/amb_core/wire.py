"""The wire format every network adapter uses: one JSON object per message.

``{"amb":1,"id":...,"topic":...,"payload":{...},"priority":"NORMAL","sender":...,
"correlation_id":...,"reply_to":...,"timestamp":"2026-11-24T10:00:00.123456Z","ttl":...,
"metadata":{...}}``, UTF-8, keys in this order. The leading ``"amb":1`` marks an AMB envelope, so
anything else found on a topic (a foreign producer's data, garbage) is recognised and skipped.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from pydantic_core import to_json

from amb_core.errors import InvalidMessageError
from amb_core.message import Message

logger = logging.getLogger("amb")

WIRE_VERSION = 1
CONTENT_TYPE = "application/vnd.amb.v1+json"
_MARK = b'{"amb":1,'


def encode(message: Message) -> bytes:
    """The message as wire bytes. The bus has already checked that payload and metadata are JSON."""
    fields = message.__dict__
    return to_json(
        {
            "amb": WIRE_VERSION,
            "id": fields["id"],
            "topic": fields["topic"],
            "payload": fields["payload"],
            "priority": fields["priority"].name,
            "sender": fields["sender"],
            "correlation_id": fields["correlation_id"],
            "reply_to": fields["reply_to"],
            "timestamp": fields["timestamp"],
            "ttl": fields["ttl"],
            "metadata": fields["metadata"],
        }
    )


def decode(data: bytes | bytearray | memoryview | str) -> Message:
    """The message in ``data``; `InvalidMessageError` if it is not an AMB envelope."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if not raw.startswith(_MARK):
        raise InvalidMessageError(f"not an AMB envelope: {raw[:60]!r}")
    try:
        return Message.model_validate_json(raw)
    except ValidationError as error:
        raise InvalidMessageError(
            f"garbled AMB envelope: {error.errors()[0]['msg']}: {raw[:60]!r}"
        ) from error


def decode_or_log(data: bytes | bytearray | memoryview | str, source: str) -> Message | None:
    """`decode`, or None after logging a warning that names ``source`` (a topic, a queue)."""
    try:
        return decode(data)
    except InvalidMessageError as error:
        logger.warning("skipped a message on %s: %s", source, error)
        return None
