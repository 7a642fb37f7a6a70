"""`Policy`: the options every adapter takes, with the same names, defaults and meaning.

The failure-handling ones are decided by the bus, so they mean the same on every broker
(docs/semantics.md, "When things go wrong"); ``group_expiry`` is carried out by each adapter
with its broker's own mechanism where it has one (docs/semantics.md, "A group's lifetime").
``MessageBus.from_url(url, max_attempts=5, outage_timeout=10)`` works with any URL,
``memory://`` included.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

#: A week, in seconds: see `Policy.group_expiry`.
DEFAULT_GROUP_EXPIRY = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Policy:
    #: Handler calls a grouped message gets before it is dead-lettered (1: never retried).
    max_attempts: int = 3
    #: Seconds `connect()` may take, whatever the peer does (silent, wrong protocol, TLS mismatch).
    connect_timeout: float = 10.0
    #: Seconds an outage is ridden out: a confirmed publish, or a publish waiting for room in
    #: the outage buffer, raises `BrokerUnavailableError` after this long.
    outage_timeout: float = 30.0
    #: Fire-and-forget messages kept, in order, while the broker is unreachable.
    outage_buffer: int = 10_000
    #: Seconds a group may go without any member before it is removed with its backlog. A week
    #: (`DEFAULT_GROUP_EXPIRY`): a work queue outlives restarts, deploys and a long weekend
    #: down, and Kafka's own offset retention (``offsets.retention.minutes``) is a week too.
    group_expiry: float = DEFAULT_GROUP_EXPIRY

    NAMES: ClassVar[frozenset[str]] = frozenset(
        {"max_attempts", "connect_timeout", "outage_timeout", "outage_buffer", "group_expiry"}
    )

    def __post_init__(self) -> None:
        for name in ("max_attempts", "outage_buffer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        for name in ("connect_timeout", "outage_timeout", "group_expiry"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")

    @classmethod
    def take(cls, options: dict[str, Any]) -> Policy:
        """The policy named in ``options``, removing those names from it (the rest are the
        adapter's own)."""
        return cls(**{name: options.pop(name) for name in list(options) if name in cls.NAMES})

    def describe(self) -> str:
        return ", ".join(f"{field.name}={getattr(self, field.name)!r}" for field in fields(self))
