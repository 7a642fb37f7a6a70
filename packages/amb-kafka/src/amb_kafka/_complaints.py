"""How the adapter's background loops report trouble without flooding the log or dying."""

from __future__ import annotations

import logging
import time

from amb_core.adapter import Link, throttled

logger = logging.getLogger("amb.kafka")

#: Seconds between two tracebacks of one kind of unexpected error.
_TRACEBACK_INTERVAL = 60.0
_last_traceback: dict[str, float] = {}


def complain(link: Link, kind: str, message: str, *args: object) -> None:
    """A WARNING for something that should pass (a failed fetch or commit), at most a few a
    minute per ``kind``; DEBUG while the broker is known to be down (the link said so)."""
    if link.up:
        throttled(logger, kind, message, *args)
    else:
        logger.debug(message, *args)


def unexpected(kind: str, message: str, *args: object, error: BaseException) -> None:
    """An ERROR for an exception nothing expected (a bug): the loop that caught it goes on, so
    it must not die silently. With its traceback at most once a minute per ``kind``."""
    now = time.monotonic()
    if now - _last_traceback.get(kind, -_TRACEBACK_INTERVAL) >= _TRACEBACK_INTERVAL:
        if len(_last_traceback) > 1024:
            _last_traceback.clear()
        _last_traceback[kind] = now
        logger.error(message, *args, exc_info=error)
    else:
        logger.debug(message, *args, exc_info=error)


def reset() -> None:
    """Forget which tracebacks were shown (for tests)."""
    _last_traceback.clear()
