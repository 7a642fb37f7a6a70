"""Logging that stays readable under floods: one WARNING line per event, a few per minute per kind.

AMB logs on the ``amb`` logger's children, one per area (``amb.bus``, ``amb.middleware``,
``amb.memory``, ``amb.redis``, ``amb.rabbitmq``, ``amb.kafka``...). Following the standard
library's advice for libraries, ``amb`` has a `logging.NullHandler` and nothing else: nothing is
printed until the application configures logging (``logging.basicConfig(level=logging.INFO)``).
Records about one message carry `message_fields` as ``extra``. Whatever can repeat without bound (garbled messages from a
hostile producer, reconnect attempts during an outage) goes through `throttled`: the first
lines of a minute are logged at their level, the rest at DEBUG, and the next line let through
says how many were held back, so nothing disappears and nothing floods.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amb_core._message import Message

logging.getLogger("amb").addHandler(logging.NullHandler())

#: Lines of one kind let through at their level per period, and the period in seconds.
BURST = 5
PERIOD = 60.0
_MAX_KINDS = 1024


class _Window:
    __slots__ = ("held", "lines", "started")

    def __init__(self, now: float) -> None:
        self.started = now
        self.lines = 0
        self.held = 0


_windows: dict[str, _Window] = {}


def throttled(
    log: logging.Logger, kind: str, message: str, *args: object, level: int = logging.WARNING
) -> None:
    """``log.log(level, message, *args)`` unless `BURST` lines of ``kind`` were already logged at
    ``level`` in the last `PERIOD` seconds; then at DEBUG."""
    now = time.monotonic()
    window = _windows.get(kind)
    if window is None or now - window.started >= PERIOD:
        if len(_windows) >= _MAX_KINDS:
            _windows.clear()
        held = window.held if window is not None else 0
        window = _windows[kind] = _Window(now)
        window.held = held
    if window.lines < BURST:
        window.lines += 1
        if window.held:
            message += " (%d more like this in the last minute were logged at DEBUG)"
            args = (*args, window.held)
            window.held = 0
        log.log(level, message, *args)
        return
    window.held += 1
    log.debug(message, *args)


def reset() -> None:
    """Forget every window (for tests)."""
    _windows.clear()


def message_fields(message: Message, group: str | None = None) -> dict[str, object]:
    """The ``extra`` of a log record about ``message``: its topic, id and group (None without
    one), as fields a JSON formatter can index (``record.topic``, ``record.message_id``,
    ``record.group``)."""
    return {"topic": message.topic, "message_id": message.id, "group": group}


def note_unreceived(log: logging.Logger, message: Message) -> None:
    """Say (WARNING) that the broker told that no subscription receives the confirmed
    ``message``: not an error (the seed README publishes with nobody listening), but worth a
    line where the broker can tell."""
    log.warning(
        "no subscription receives message %s on %s", message.id, message.topic, extra=message_fields(message)
    )
