"""`Policy`: the failure-handling options every adapter takes, with the same names and defaults.

They are decided by the bus, so they mean the same on every broker (docs/semantics.md, "When
things go wrong"): ``MessageBus.from_url(url, max_attempts=5, outage_timeout=10)`` works with any
URL, ``memory://`` included.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


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

    NAMES: ClassVar[frozenset[str]] = frozenset(
        {"max_attempts", "connect_timeout", "outage_timeout", "outage_buffer"}
    )

    def __post_init__(self) -> None:
        for name in ("max_attempts", "outage_buffer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        for name in ("connect_timeout", "outage_timeout"):
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
