"""The supervision toolkit: what every adapter needs to run background work without losing it.

Adapters keep tasks running beside the bus (readers, writers, reconnects, retirements of group
members), reconnect after outages and translate a client library's exceptions. Written by hand
each time, these go wrong in the same few ways: a task nobody references is garbage-collected
mid-flight, a crashed task's exception is never seen, closing leaves tasks running against a
closed connection, a reconnect loop spins without backing off, and an exception quoting a URL
leaks its password. So each is written once, here:

- `TaskSet` owns background tasks: it keeps them referenced, reports a crash through a hook
  (logged by default), and `TaskSet.close` cancels and awaits whatever is left.
- `keep_reconnecting` retries an attempt with `backoff_delays` until it succeeds, the caller
  stops it, or it has failed ``attempts`` times, telling a hook about each failure.
- `error_boundary` is the one ``with`` block in which an adapter turns its client library's
  exceptions into amb-core's (`BrokerUnavailableError`, `BrokerRefusedError`...), as httpx maps
  httpcore's in one context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from amb_core._backoff import backoff_delays
from amb_core._errors import AMBError

T = TypeVar("T")
logger = logging.getLogger("amb")

#: What `TaskSet` calls when one of its tasks ends with an exception: the task and the exception.
CrashHook = Callable[["asyncio.Task[Any]", BaseException], None]


class TaskSet:
    """Background tasks one object owns (an adapter, a connection, a bus).

    `start` runs a coroutine as a task and keeps it referenced until it ends (asyncio itself
    keeps only weak references to tasks). A task that ends with an exception is reported to
    ``on_crash``; without one, it is logged at ERROR with its traceback, naming ``name``, so a
    crash is never silent. `close` cancels what is still running and awaits it; the set can be
    used again afterwards (a bus or adapter may connect again).

    Not for the per-message hot path: each task costs a done-callback (the bus's subscription
    workers keep their own bookkeeping for that reason).
    """

    __slots__ = ("_on_crash", "_tasks", "name")

    def __init__(self, name: str, *, on_crash: CrashHook | None = None) -> None:
        #: Whose tasks these are, for the log line about a crash ("Redis at host:6379").
        self.name = name
        self._on_crash = on_crash
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"<TaskSet {self.name}: {len(self._tasks)} running>"

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def start(self, coroutine: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``coroutine`` as a task of this set and return the task."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # retrieved here, so asyncio does not complain about it later
        if error is None:
            return
        if self._on_crash is not None:
            self._on_crash(task, error)
        else:
            logger.error("%s: background task %s crashed", self.name, task.get_name(), exc_info=error)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until every task (those started meanwhile too) has ended by itself, for at most
        ``timeout`` seconds; return whether none is left."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._tasks:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(list(self._tasks), timeout=left)
        return True

    async def close(self, timeout: float = 0.0) -> None:
        """Give the tasks up to ``timeout`` seconds to end by themselves, then cancel the rest
        and wait until they have ended (a crash while ending is reported as any other)."""
        if timeout > 0:
            await self.wait(timeout)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def keep_reconnecting(
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    on_failure: Callable[[BaseException], object] | None = None,
    attempts: int | None = None,
    keep_going: Callable[[], bool] | None = None,
    delays: Iterable[float] | None = None,
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T | None:
    """Await ``attempt()`` until it returns, and return what it returned.

    Before each attempt it waits the next of ``delays`` (default `backoff_delays`: 50 ms
    doubling to 2 s, jittered), since it is called once something was just lost or refused;
    ``pause(delay)`` does the waiting (default `asyncio.sleep`; one that returns early, when
    something says the broker is back, makes the next attempt come sooner).
    Each attempt that raises ``retry_on`` goes to ``on_failure`` (a `Link`'s ``retrying``, which
    logs it); anything else propagates at once (a bug is not an outage). After ``attempts``
    failed attempts (None: no limit) the last failure is raised. Once ``keep_going()`` is False
    (the adapter is closing) it returns None without another attempt.
    """
    failures = 0
    for delay in backoff_delays() if delays is None else delays:
        await pause(delay)
        if keep_going is not None and not keep_going():
            return None
        try:
            return await attempt()
        except retry_on as error:
            failures += 1
            if on_failure is not None:
                on_failure(error)
            if attempts is not None and failures >= attempts:
                raise
    return None


@contextlib.contextmanager
def error_boundary(
    translate: Callable[[Exception], BaseException],
    *,
    catch: type[Exception] | tuple[type[Exception], ...] = Exception,
    chain: bool = False,
) -> Iterator[None]:
    """Raise, for whatever the block raises, amb-core's error for it: ``translate(error)``.

    ``translate`` returns the error unchanged for what it does not map (a bug stays a bug), and
    amb-core's own errors pass through untouched. Only ``catch`` is looked at; cancellation
    always passes. The translated error is raised ``from None`` unless ``chain``: a client
    library's exception may quote a URL with its password, and a chained one would show it in
    every traceback.
    """
    try:
        yield
    except catch as error:
        if isinstance(error, AMBError):
            raise
        translated = translate(error)
        if translated is error:
            raise
        if chain:
            raise translated from error
        raise translated from None
