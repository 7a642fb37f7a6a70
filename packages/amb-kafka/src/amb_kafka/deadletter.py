"""Where a grouped message goes once its handler failed ``max_attempts`` times."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from amb_core.backoff import backoff_delays
from amb_kafka.naming import dead_letter_topic

logger = logging.getLogger("amb")

#: ``send(topic, value, key, headers)`` returns once the broker acknowledged the record.
Send = Callable[[str, bytes, "bytes | None", list[tuple[str, bytes]]], Awaitable[None]]

_WRITE_ATTEMPTS = 8


class DeadLetters:
    """Copies failed records, unchanged, to ``_amb.dlq.<topic>``.

    Headers say where the record came from: ``amb-dlq-topic``, ``amb-dlq-partition``,
    ``amb-dlq-offset``, ``amb-dlq-group`` (the Kafka consumer group) and ``amb-dlq-attempts``.
    """

    def __init__(self, send: Send) -> None:
        self._send = send

    async def write(self, record: Any, group: str, attempts: int) -> bool:
        """Write ``record``; False (after logging) if the broker would not take it, in which
        case the offset stays uncommitted and the group gets the record again later."""
        topic = dead_letter_topic(record.topic)
        headers = [
            ("amb-dlq-topic", record.topic.encode()),
            ("amb-dlq-partition", str(record.partition).encode()),
            ("amb-dlq-offset", str(record.offset).encode()),
            ("amb-dlq-group", group.encode()),
            ("amb-dlq-attempts", str(attempts).encode()),
        ]
        delays = backoff_delays(0.1, 2.0)
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                await self._send(topic, record.value or b"", record.key, headers)
            except Exception as error:
                if attempt + 1 == _WRITE_ATTEMPTS:
                    logger.error(
                        "could not dead-letter offset %s of %s[%s] to %s: %s",
                        record.offset,
                        record.topic,
                        record.partition,
                        topic,
                        error,
                    )
                    return False
                await asyncio.sleep(next(delays))
            else:
                logger.warning(
                    "message at offset %s of %s[%s] failed %d times in group %s; moved to %s",
                    record.offset,
                    record.topic,
                    record.partition,
                    attempts,
                    group,
                    topic,
                )
                return True
        return False  # pragma: no cover
