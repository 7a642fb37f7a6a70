"""Keeping aiokafka's per-attempt lines out of WARNING: the adapter's `Link` tells outages.

aiokafka logs every failed attempt of every client at WARNING or ERROR: a fetcher, a heartbeat,
the producer's sender and the metadata refresh each retry every 100 ms or so (about 2,000 lines
in 30 s of outage with a few subscriptions), and every member of a group logs each rebalance.
It retries all of that by itself, and the adapter's `Link` already says, once, that the broker
is unreachable and, once, that it is back. So records of aiokafka's loggers are demoted to
DEBUG (and dropped where DEBUG is not enabled for that logger) when they are:

- about an error aiokafka retries by itself (its ``retriable`` errors: a leader or coordinator
  moving, a request timing out), or the group membership's routine (a rebalance under way, a
  generation or member id to renew, which aiokafka handles by rejoining), at any time;
- about reaching the broker at all (a refused or broken connection, a metadata refresh that
  found nobody) while an adapter of this process is checking its broker, has lost it, or got it
  back less than a minute ago (reconnecting has its own chatter).

Everything else passes unchanged: authorization failures, aiokafka's own unexpected errors
(but for its fetcher's assertion that the adapter recovers from, see `amb_kafka._fetching`).
A logging filter only sees the records of the logger it is attached to (not those of its
children), so one is attached to every aiokafka logger.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from aiokafka import errors as kafka  # type: ignore[import-untyped]

from amb_kafka._errors import is_unreachable
from amb_kafka._fetching import FETCHER_DIED

#: Seconds after the broker is back during which reconnecting's chatter stays at DEBUG.
GRACE = 60.0


class Watched(Protocol):
    """What the filter asks of an adapter's `amb_kafka._health.Health`."""

    def hushing(self, now: float) -> bool: ...


_watched: dict[int, Watched] = {}

#: Messages about reaching the broker that carry no exception to tell them by.
_CONNECTIVITY = (
    "Unable to update metadata from",
    "Unable connect to",
    "Unable to request metadata",
    "Heartbeat session expired",
    "Failed fetch messages from",
    "Failed fetch offsets from",
    "Got error produce response",
    "Cannot send",
    "Could not send",
    "Error sending",
)
#: What aiokafka handles by itself without an error to tell it by: the group membership's
#: routine (it rejoins), metadata not there yet (it asks again).
_MEMBERSHIP = (
    # A topic this process just created, not in every broker's metadata yet: aiokafka asks
    # again (and the adapter creates every topic it uses).
    "Topic %s not found in cluster metadata",
    "No partition metadata for topic",
    "Heartbeat failed for group",
    "Heartbeat failed: local member_id",
    "Marking the coordinator dead",
    "OffsetFetchRequest -- unknown topic",
)
_MEMBERSHIP_ERRORS = (
    kafka.RebalanceInProgressError,
    kafka.IllegalGenerationError,
    kafka.UnknownMemberIdError,
    kafka.NotCoordinatorForGroupError,
    kafka.GroupCoordinatorNotAvailableError,
    kafka.GroupLoadInProgressError,
    kafka.CommitFailedError,
)


def watch(health: Watched) -> None:
    """Take ``health`` into account until `forget`."""
    _install()
    _watched[id(health)] = health


def forget(health: Watched) -> None:
    _watched.pop(id(health), None)


def _errors(record: logging.LogRecord) -> list[Any]:
    """The exceptions a record carries (aiokafka passes some as classes)."""
    found = [record.exc_info[1]] if record.exc_info and record.exc_info[1] is not None else []
    args = record.args if isinstance(record.args, tuple) else ()
    return found + [
        arg
        for arg in args
        if isinstance(arg, BaseException) or (isinstance(arg, type) and issubclass(arg, BaseException))
    ]


def routine(record: logging.LogRecord) -> bool:
    """Whether ``record`` is about something aiokafka handles by itself: an error it retries,
    or the group membership's routine (or that the adapter handles: a fetcher that died on
    aiokafka's assertion is started again, see `amb_kafka._fetching`)."""
    if record.msg == FETCHER_DIED and record.exc_info and isinstance(record.exc_info[1], AssertionError):
        return True
    for error in _errors(record):
        kind = error if isinstance(error, type) else type(error)
        if getattr(error, "retriable", False) or issubclass(kind, _MEMBERSHIP_ERRORS):
            return True
    message = record.msg if isinstance(record.msg, str) else ""
    return message.startswith(_MEMBERSHIP)


def about_connectivity(record: logging.LogRecord) -> bool:
    """Whether ``record`` reports a failure to reach the broker."""
    if any(isinstance(error, BaseException) and is_unreachable(error) for error in _errors(record)):
        return True
    message = record.msg if isinstance(record.msg, str) else ""
    return message.startswith(_CONNECTIVITY)


def _hushing() -> bool:
    now = time.monotonic()
    return any(health.hushing(now) for health in _watched.values())


class _Demote(logging.Filter):
    """Attached to one aiokafka logger."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not _watched:
            return True
        if not routine(record) and not (about_connectivity(record) and _hushing()):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self._logger.isEnabledFor(logging.DEBUG)


def _attach(logger: Any) -> None:
    if isinstance(logger, logging.Logger) and not any(isinstance(f, _Demote) for f in logger.filters):
        logger.addFilter(_Demote(logger))


def _install() -> None:
    """Attach the filter to every aiokafka logger. aiokafka creates them when its modules are
    imported, which this package has done by now; `watch` looks again at every connect."""
    for name in list(logging.Logger.manager.loggerDict):
        if name == "aiokafka" or name.startswith("aiokafka."):
            _attach(logging.getLogger(name))
