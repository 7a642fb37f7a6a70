"""Reconnect delays shared by the adapters: exponential, capped, with jitter."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
logger = logging.getLogger("amb.link")


def backoff_delays(initial: float = 0.05, maximum: float = 2.0, factor: float = 2.0) -> Iterator[float]:
    """Endless delays in seconds: ``initial``, then ``factor`` times more each time up to
    ``maximum``, each jittered by up to 20 % so many clients do not reconnect in step."""
    delay = initial
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * factor, maximum)


async def keep_trying(
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: type[Exception] | tuple[type[Exception], ...],
    what: str,
) -> T:
    """Await ``attempt()`` after each of `backoff_delays` until it stops raising ``retry_on``
    (each failure is logged at DEBUG as ``what`` being unreachable), and return its result."""
    for delay in backoff_delays():
        await asyncio.sleep(delay)
        try:
            return await attempt()
        except retry_on as error:
            logger.debug("%s is still unreachable: %s", what, error)
    raise AssertionError("unreachable")  # pragma: no cover - backoff_delays is endless
