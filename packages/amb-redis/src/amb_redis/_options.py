"""The adapter's own options: `RedisBroker`'s keyword arguments, validated and kept in `Options`.

The failure-policy options every adapter takes (``max_attempts``, ``connect_timeout``,
``outage_timeout``, ``outage_buffer``, ``group_expiry``) are amb-core's `amb_core.Policy`; what
is left over goes to redis-py's connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from amb_redis._names import check_prefix

#: The default ``max_message_size``: 8 MiB. Redis itself takes bulk strings up to 512 MB
#: (``proto-max-bulk-len``), but it disconnects a Pub/Sub subscriber whose pending output passes
#: 32 MB, or stays over 8 MB for 60 s (``client-output-buffer-limit pubsub 32mb 8mb 60``, the
#: default): messages at most 8 MiB leave every subscriber room for a few of them in flight.
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024

#: Options earlier versions took, and what to use instead.
RENAMED = {
    "timeout": (
        "RedisBroker has no 'timeout' option any more: how long an outage is ridden out is "
        "'outage_timeout', and how long connecting may take 'connect_timeout' (failure-policy "
        "options, the same on every adapter)"
    ),
    "group_retention": (
        "RedisBroker has no 'group_retention' option any more: a group no member has joined for "
        "'group_expiry' seconds is removed (an option every adapter takes, default a week)"
    ),
}


@dataclass(frozen=True)
class Options:
    """`RedisBroker`'s options (its docstring says what each means), checked once here."""

    prefix: str = "amb:"
    stream_maxlen: int = 100_000
    dead_letter_maxlen: int = 100_000
    prefetch: int | None = None
    claim_idle: float = 30.0
    close_timeout: float = 5.0
    max_pending: int = 4096
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    def __post_init__(self) -> None:
        if self.prefetch is not None and self.prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        if min(self.stream_maxlen, self.dead_letter_maxlen, self.max_pending) < 1:
            raise ValueError("stream_maxlen, dead_letter_maxlen and max_pending must be positive")
        if self.claim_idle <= 0 or self.close_timeout < 0:
            raise ValueError("claim_idle must be positive, close_timeout not negative")
        size = self.max_message_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"max_message_size must be a positive int (bytes), not {size!r}")
        check_prefix(self.prefix)
