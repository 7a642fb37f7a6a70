"""`Link`: whether an adapter can reach its broker right now, and the one place outages are told.

A network adapter owns a `Link` and reports on it: `lost` when it notices the connection is gone
(whatever the cause), `retrying` after each failed attempt to get it back, `restored` once it is
connected again with its subscriptions in place. The bus reads `up` on every publish and rides
the outage out for the caller (buffering, waiting, raising after ``outage_timeout``: see
`amb_core._outbox`), so every adapter behaves the same during an outage.

Logging is part of the job, so that a long outage reads as two lines: one WARNING when the
connection is lost, one when it is back (with how long it was out), and in between at most one
"still unreachable" line a minute; every attempt is logged at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from amb_core._errors import BrokerUnavailableError
from amb_core._logs import throttled
from amb_core._supervision import keep_reconnecting

logger = logging.getLogger("amb.link")
T = TypeVar("T")

#: Seconds between "still unreachable" lines during one outage.
REMINDER_INTERVAL = 60.0


class Link:
    """The state of one adapter's connection to its broker.

    ``name`` says which broker in every line and error, without credentials: "Redis at
    127.0.0.1:6379", "RabbitMQ at amqp://guest:***@localhost/".
    """

    __slots__ = ("_log_kind", "_lost_at", "_reason", "_reminded_at", "_waiters", "name", "up")

    def __init__(self, name: str) -> None:
        self.name = name
        #: Read by the bus on every publish: False from `lost` until `restored`.
        self.up = True
        self._lost_at = 0.0
        self._reminded_at = 0.0
        self._reason = ""
        self._waiters: list[asyncio.Future[None]] = []
        #: Throttled per link, not per broker: every bus on one broker reports its own outage.
        self._log_kind = f"link:{id(self)}"

    def __repr__(self) -> str:
        return f"<Link {self.name} {'up' if self.up else f'down for {self.down_for:.1f} s'}>"

    @property
    def down_for(self) -> float:
        """Seconds since the connection was lost; 0 while it is up."""
        return 0.0 if self.up else time.monotonic() - self._lost_at

    @property
    def reason(self) -> str:
        """Why the connection was lost (the last outage's reason once it is back)."""
        return self._reason

    def lost(self, reason: object) -> None:
        """The connection is gone (idempotent: only the first call of an outage is logged)."""
        if not self.up:
            logger.debug("%s: connection lost again (%s)", self.name, reason)
            return
        self.up = False
        self._lost_at = self._reminded_at = time.monotonic()
        self._reason = str(reason) or type(reason).__name__
        # Throttled: a connection that flaps must not flood the log either.
        throttled(
            logger,
            self._log_kind,
            "lost the connection to %s (%s); reconnecting",
            self.name,
            self._reason,
        )

    def retrying(self, error: object) -> None:
        """An attempt to reconnect failed: DEBUG, and a WARNING once a minute."""
        now = time.monotonic()
        if not self.up and now - self._reminded_at >= REMINDER_INTERVAL:
            self._reminded_at = now
            logger.warning(
                "%s is still unreachable after %.0f s (%s); still trying",
                self.name,
                now - self._lost_at,
                error,
            )
        else:
            logger.debug("%s is still unreachable: %s", self.name, error)

    def reset(self) -> None:
        """A fresh connection (the bus connected again): up, whatever ended the last one,
        without a "back" line; anything still waiting is woken."""
        self.up = True
        self._wake_waiters()

    def restored(self) -> None:
        """Connected again, subscriptions in place: wakes everything waiting in `wait_up`."""
        if self.up:
            return
        self.up = True
        throttled(
            logger,
            self._log_kind,
            "the connection to %s is back after %.1f s",
            self.name,
            time.monotonic() - self._lost_at,
        )
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_up(self, timeout: float | None) -> None:
        """Return once `up`; raise `BrokerUnavailableError` after ``timeout`` seconds."""
        if self.up:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except asyncio.TimeoutError:
            raise self.unavailable(timeout) from None
        finally:
            if not waiter.done():
                waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def unavailable(self, waited: float | None = None) -> BrokerUnavailableError:
        """The error for an operation that gave up on this broker."""
        waited_for = f" (waited {waited} s)" if waited is not None else ""
        return BrokerUnavailableError(
            f"{self.name} has been unreachable for {self.down_for:.1f} s{waited_for}: {self._reason}"
        )

    async def reconnect(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> T | None:
        """Await ``attempt()`` after each of `backoff_delays` until it stops raising ``retry_on``
        (each failure goes to `retrying`) and return its result; None once ``keep_going()`` is False
        (the adapter is closing). Does not call `restored`: the caller restores its
        subscriptions first. `keep_reconnecting` with this link's logging."""
        return await keep_reconnecting(
            attempt, retry_on=retry_on, on_failure=self.retrying, keep_going=keep_going
        )
