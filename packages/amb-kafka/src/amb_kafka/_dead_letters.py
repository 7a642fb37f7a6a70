"""Where a grouped record goes when the bus gives up on it: its handler failed ``max_attempts``
times, or it is not a valid envelope."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from amb_core.adapter import BrokerUnavailableError, Link, backoff_delays
from amb_kafka._naming import dead_letter_topic

logger = logging.getLogger("amb.kafka")

#: ``send(topic, value, key, headers)`` returns once the broker acknowledged the record and
#: raises amb-core's errors (see `amb_kafka._errors`).
Send = Callable[[str, bytes, "bytes | None", list[tuple[str, bytes]]], Awaitable[None]]

#: Tries while the broker is reachable (an outage is waited out, not counted).
_WRITE_ATTEMPTS = 8


class DeadLetters:
    """Copies records, unchanged, to ``_amb.dlq.<topic>``.

    Headers say where the record came from and why it is there: ``amb-dlq-topic``,
    ``amb-dlq-partition``, ``amb-dlq-offset``, ``amb-dlq-group`` (the Kafka consumer group),
    ``amb-dlq-attempts`` and ``amb-dlq-reason`` (UTF-8). The record's own headers come first.
    """

    def __init__(self, send: Send, link: Link) -> None:
        self._send = send
        self._link = link

    async def write(self, record: Any, group: str, attempts: int, reason: str) -> str:
        """Write ``record`` and return the dead-letter topic. Raises if the broker will not take
        it (the bus logs that; the offset stays uncommitted, so the group reads the record
        again later); an outage is waited out first."""
        topic = dead_letter_topic(record.topic)
        headers = [
            *(record.headers or ()),
            ("amb-dlq-topic", record.topic.encode()),
            ("amb-dlq-partition", str(record.partition).encode()),
            ("amb-dlq-offset", str(record.offset).encode()),
            ("amb-dlq-group", group.encode()),
            ("amb-dlq-attempts", str(attempts).encode()),
            ("amb-dlq-reason", reason.encode("utf-8", "replace")),
        ]
        delays = backoff_delays(0.1, 2.0)
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            if not self._link.up:
                await self._link.wait_up(None)
            try:
                await self._send(topic, record.value or b"", record.key, headers)
            except BrokerUnavailableError as error:
                if attempt == _WRITE_ATTEMPTS:
                    raise
                logger.debug(
                    "could not dead-letter offset %s of %s yet: %s", record.offset, record.topic, error
                )
                await asyncio.sleep(next(delays))
            else:
                return topic
        raise AssertionError("unreachable")  # pragma: no cover
