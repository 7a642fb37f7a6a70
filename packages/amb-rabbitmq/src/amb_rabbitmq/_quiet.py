"""Keeps aio-pika's and aiormq's own log lines about OUR connections out of WARNING.

aiormq logs an ERROR for every failed connection attempt ("error when creating transport") and
an ERROR plus a WARNING with a traceback when a connection drops: during an outage, one per
reconnect attempt. The adapter reports outages itself, once, through its `amb_core.adapter.Link`
(one line lost, one back, a reminder a minute), so these lines are only noise: they are logged
at DEBUG instead, and never with the password (aiormq already censors URLs; this is a second
guard).

Only our connections are touched: `ours` marks the context in which a connection is opened,
and every task aiormq starts for that connection (reader, writer, channel tasks) inherits the
mark with the context. Other aio-pika connections in the same process log as usual. One
exception is kept visible: RabbitMQ blocking a connection (memory or disk alarm) stalls
publishers, so that is re-logged on the ``amb`` logger at WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from amb_core.adapter import throttled
from amb_rabbitmq._errors import Boundary

logger = logging.getLogger("amb.rabbitmq")

#: The adapter (its name and scrubbing) whose connection the current context belongs to.
_OURS: ContextVar[Boundary | None] = ContextVar("amb_rabbitmq_connection", default=None)
#: The client libraries' loggers, by prefix; each module logs on its own logger.
_LIBRARIES = ("aiormq", "aio_pika")


class _OurConnections(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ours = _OURS.get()
        if ours is None:
            return True
        text = ours.scrub(record.getMessage())
        if record.levelno >= logging.WARNING and " was blocked by" in text:
            throttled(logger, "blocked:" + ours.name, "%s blocks publishing: %s", ours.name, text)
        record.msg, record.args = text, None
        if record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_FILTER = _OurConnections()
_installed: set[str] = set()


def _install() -> None:
    """Put the filter on every logger aio-pika and aiormq have created (once each)."""
    for name in list(logging.Logger.manager.loggerDict):
        if name.split(".", 1)[0] in _LIBRARIES and name not in _installed:
            logging.getLogger(name).addFilter(_FILTER)
            _installed.add(name)


@contextmanager
def ours(boundary: Boundary) -> Iterator[None]:
    """Mark what is started inside (a connection and its tasks) as this adapter's."""
    _install()
    token = _OURS.set(boundary)
    try:
        yield
    finally:
        _OURS.reset(token)


def not_ours() -> None:
    """Unmark the current task: a delivery's task, whose handler runs user code that may open
    connections of its own (called per delivery: a context variable set, nothing more)."""
    _OURS.set(None)
