from __future__ import annotations

from datetime import datetime, timezone

import pydantic
import pytest

from amb_core import Message, MessagePriority
from amb_core._message import build_message
from amb_core.adapter import new_id


def test_priorities_are_totally_ordered() -> None:
    assert MessagePriority.URGENT > MessagePriority.HIGH > MessagePriority.NORMAL > MessagePriority.LOW
    assert sorted(MessagePriority, reverse=True)[0] is MessagePriority.URGENT


def test_priority_is_serialised_by_name_and_read_back_in_any_form() -> None:
    message = Message(id="1", topic="t", priority=MessagePriority.HIGH)
    assert message.model_dump(mode="json")["priority"] == "HIGH"
    for given in ("HIGH", "high", 2, MessagePriority.HIGH):
        assert Message(id="1", topic="t", priority=given).priority is MessagePriority.HIGH
    with pytest.raises(pydantic.ValidationError):
        Message(id="1", topic="t", priority="highest")


def test_the_seed_readme_message_model_example() -> None:
    msg = Message(
        id="unique-id",
        topic="agent.topic",
        payload={"key": "value"},
        priority=MessagePriority.HIGH,
        sender="agent-1",
        correlation_id="request-123",
        reply_to="reply.topic",
        ttl=60,
        metadata={"custom": "data"},
    )
    assert msg.ttl == 60 and msg.timestamp.tzinfo is not None
    with pytest.raises(pydantic.ValidationError):
        msg.topic = "changed"  # type: ignore[misc]


def test_timestamps_are_utc() -> None:
    naive = Message(id="1", topic="t", timestamp=datetime(2026, 1, 1, 12, 0))
    assert naive.timestamp.tzinfo == timezone.utc


def test_build_message_equals_a_validated_message() -> None:
    now = datetime.now(timezone.utc)
    fields = {
        "id": "i",
        "topic": "a.b",
        "payload": {"k": [1]},
        "priority": MessagePriority.LOW,
        "sender": "s",
        "correlation_id": "c",
        "reply_to": "r",
        "timestamp": now,
        "ttl": 1.5,
        "metadata": {"m": 1},
        "key": "order-7",
    }
    built = build_message(**fields)  # type: ignore[arg-type]
    validated = Message(**fields)  # type: ignore[arg-type]
    assert built == validated
    assert built.model_dump() == validated.model_dump()
    assert built.model_fields_set == validated.model_fields_set
    assert built.model_dump_json() == validated.model_dump_json()


def test_ids_are_unique() -> None:
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
