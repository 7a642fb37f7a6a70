"""The adapter's options (``RabbitMQBroker(url, **options)`` or ``MessageBus.from_url(url, **options)``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

# Room is left for the suffixes the adapter appends (".group.<name>.<pattern>" and the like).
_EXCHANGE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_MAX_EXCHANGE = 64


@dataclass(frozen=True)
class Options:
    """Validated options; see the package README for what each one changes on the broker."""

    #: Name of the durable topic exchange; also the prefix of every queue and exchange the
    #: adapter declares, so two applications on one vhost can keep apart.
    exchange: str = "amb"
    #: Handler calls a grouped message gets before it is dead-lettered (1 = never retried).
    max_attempts: int = 3
    #: Unacknowledged messages the broker may push to one subscription; None sizes it from the
    #: subscription's concurrency.
    prefetch: int | None = None
    #: Publish with delivery_mode=2, so messages waiting in a group's durable queue survive a
    #: broker restart. Ungrouped queues are transient either way.
    persistent: bool = True
    #: Seconds to wait for the broker when connecting.
    connect_timeout: float = 10.0
    #: Seconds publish and subscribe wait for the connection to come back during an outage
    #: before raising BrokerUnavailableError.
    outage_timeout: float = 30.0

    @classmethod
    def parse(cls, options: dict[str, Any]) -> Options:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"RabbitMQBroker got unknown options {unknown}; it takes {sorted(known)}")
        parsed = cls(**options)
        parsed._check()
        return parsed

    def _check(self) -> None:
        if (
            not isinstance(self.exchange, str)
            or len(self.exchange) > _MAX_EXCHANGE
            or not _EXCHANGE.fullmatch(self.exchange)
        ):
            raise ValueError(
                f"exchange must be dot-separated segments of [A-Za-z0-9_-], at most {_MAX_EXCHANGE}"
                f" characters, not {self.exchange!r}"
            )
        if self.exchange.startswith("amq."):
            raise ValueError(
                f"exchange names starting with 'amq.' are reserved by RabbitMQ: {self.exchange!r}"
            )
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ValueError(f"max_attempts must be a positive int, not {self.max_attempts!r}")
        if self.prefetch is not None and (
            isinstance(self.prefetch, bool)
            or not isinstance(self.prefetch, int)
            or not 0 < self.prefetch < 65536
        ):
            raise ValueError(f"prefetch must be an int from 1 to 65535 or None, not {self.prefetch!r}")
        for name in ("connect_timeout", "outage_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")

    def prefetch_for(self, concurrency: int) -> int:
        """How many unacknowledged messages the broker may push to one subscription.

        Enough to keep every handler busy while acknowledgements travel back (a few hundred
        covers a local round trip at tens of thousands of messages a second), and below the
        bus's default local queue (1024) so the broker, not the process, holds any excess.
        """
        if self.prefetch is not None:
            return self.prefetch
        return min(1000, max(256, 32 * concurrency))
