"""The envelope: `Message` and `MessagePriority`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import IntEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer


class MessagePriority(IntEnum):
    """Delivery priority; totally ordered, ``URGENT > HIGH > NORMAL > LOW``, serialised by name."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    URGENT = 3

    @classmethod
    def coerce(cls, value: object) -> MessagePriority:
        """Accept a member, its name in any case (0.1.0 wrote ``"high"``) or its integer value."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        names = ", ".join(member.name for member in cls)
        raise ValueError(f"invalid priority {value!r}; expected one of {names}")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


Priority = Annotated[
    MessagePriority,
    BeforeValidator(MessagePriority.coerce),
    PlainSerializer(lambda p: p.name, return_type=str, when_used="json"),
]
UTCDateTime = Annotated[datetime, AfterValidator(_as_utc)]


class Message(BaseModel):
    """One message on the bus. The bus carries it and never looks inside ``payload``.

    Messages are immutable: a handler gets the same object as every other local subscriber.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    topic: str
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = MessagePriority.NORMAL
    sender: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    timestamp: UTCDateTime = Field(default_factory=_utcnow)
    ttl: float | None = Field(default=None, gt=0, description="seconds the message may wait for delivery")
    metadata: dict[str, Any] = Field(default_factory=dict)
    key: str | None = Field(
        default=None, description="ordering key: messages with the same key keep their publish order"
    )

    @property
    def expires_at(self) -> datetime | None:
        """When the ttl runs out (an aware UTC datetime), or None without one. A request's ttl is
        its requester's timeout by default, so a handler can bound its own work (an LLM call,
        say) by the moment nobody waits for the answer any more."""
        ttl = self.ttl
        return None if ttl is None else self.timestamp + timedelta(seconds=ttl)

    def expired(self, now: float) -> bool:
        """Whether the ttl ran out before ``now`` (a POSIX timestamp)."""
        return self.ttl is not None and self.timestamp.timestamp() + self.ttl < now


_FIELDS = frozenset(Message.model_fields)
_new = object.__new__
_set_dict = object.__setattr__
# pydantic keeps these in slots; their descriptors set them faster than setattr does.
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def build_message(
    id: str,
    topic: str,
    payload: dict[str, Any],
    priority: MessagePriority,
    sender: str | None,
    correlation_id: str | None,
    reply_to: str | None,
    timestamp: datetime,
    ttl: float | None,
    metadata: dict[str, Any],
    key: str | None = None,
) -> Message:
    """Build a `Message` from values the bus has already validated, skipping pydantic's checks.

    This is the publish hot path: full validation costs more than the rest of a publish.
    tests/test_message.py checks that the result equals a validated `Message`.
    """
    return message_of(
        {
            "id": id,
            "topic": topic,
            "payload": payload,
            "priority": priority,
            "sender": sender,
            "correlation_id": correlation_id,
            "reply_to": reply_to,
            "timestamp": timestamp,
            "ttl": ttl,
            "metadata": metadata,
            "key": key,
        }
    )


def message_of(fields: dict[str, Any]) -> Message:
    """A `Message` holding ``fields`` (every field, validated already, as `build_message` takes
    them) as its own: for a caller that copies a template of the fields that do not change
    from one message to the next, which costs a third of building the dict anew."""
    message = _new(Message)
    _set_dict(message, "__dict__", fields)
    _set_fields_set(message, _FIELDS)
    _set_extra(message, None)
    _set_private(message, None)
    return message
