"""Progress lines, one per broker: brokers start in parallel threads, so lines must not interleave."""

from __future__ import annotations

import threading

_print_lock = threading.Lock()


def say(message: str) -> None:
    with _print_lock:
        print(message, flush=True)
