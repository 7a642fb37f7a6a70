"""Reconnect delays shared by the adapters: exponential, capped, with jitter.

`amb_core.adapter.keep_reconnecting` is the loop built on them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(initial: float = 0.05, maximum: float = 2.0, factor: float = 2.0) -> Iterator[float]:
    """Endless delays in seconds: ``initial``, then ``factor`` times more each time up to
    ``maximum``, each jittered by up to 20 % so many clients do not reconnect in step."""
    delay = initial
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * factor, maximum)
