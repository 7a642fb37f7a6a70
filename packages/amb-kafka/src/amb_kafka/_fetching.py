"""Keeping an aiokafka consumer's fetcher alive.

aiokafka 0.14's fetcher task asserts, after waiting for an assignment, that the subscription
still has one (``fetcher.py``: ``assert assignment is not None and assignment.active``). When
a pattern subscription changes at that moment (topics matching a wildcard group appearing one
after the other, as in the README's example), the assertion fails, the task ends, and nothing
starts it again: the consumer keeps its partitions and its heartbeats but never fetches again,
silently. The adapter restarts the task; the new one waits for the next assignment, which the
subscription's change brings.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("amb.kafka")

#: What aiokafka logs (at ERROR, with the traceback) when that happens; demoted by `quiet`.
FETCHER_DIED = "Unexpected error in fetcher routine"


def keep_fetching(consumer: Any, name: str) -> None:
    """Restart ``consumer``'s fetcher task whenever it ends with an error (see above)."""
    fetcher = consumer._fetcher

    def ended(task: asyncio.Task[None]) -> None:
        if task.cancelled() or fetcher._closed or task is not fetcher._fetch_task:
            return
        error = task.exception()
        if error is None:
            return
        logger.debug("the fetcher of %s ended (%r); starting it again", name, error.__cause__ or error)
        fetcher._fetch_task = asyncio.get_running_loop().create_task(fetcher._fetch_requests_routine())
        fetcher._fetch_task.add_done_callback(ended)

    fetcher._fetch_task.add_done_callback(ended)
