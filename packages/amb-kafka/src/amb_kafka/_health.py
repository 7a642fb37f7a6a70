"""Whether the broker can be reached right now: noticing that it is gone, finding out when it is
back, and reporting both on the adapter's `Link`, which the bus reads on every publish.

aiokafka reconnects by itself and never says whether the broker answers: its clients retry
forever (the idempotent producer never gives a batch up), logging every failed attempt. So the
adapter watches for what an outage looks like (a connection of any of its clients breaking or
timing out, a batch the producer does not take, a fetch or commit that fails) and then asks the
broker directly: the *probe* opens a connection of its own to a bootstrap server and asks for
metadata. Only a failed probe makes an outage (`Link.lost`); probes then go on with backoff
(`Link.retrying`, DEBUG) until one is answered (`Link.restored`). A false alarm (an idle
connection closed by the broker) costs one probe and no log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.conn import CloseReason  # type: ignore[import-untyped]

from amb_core.adapter import Link, backoff_delays, keep_reconnecting
from amb_kafka import _quiet

logger = logging.getLogger("amb.kafka")

#: Connection closes that mean the broker stopped answering (not ours, not idle ones).
_BROKEN = frozenset({CloseReason.CONNECTION_BROKEN, CloseReason.CONNECTION_TIMEOUT})


class Health:
    """Drives one adapter's `Link` (see the module docstring)."""

    def __init__(self, link: Link, probe: Callable[[], Awaitable[None]]) -> None:
        self.link = link
        self._probe = probe
        self._task: asyncio.Task[None] | None = None
        self._open = False
        self._outage: asyncio.Future[None] | None = None
        self._quiet_until = 0.0
        #: Set to cut a wait between two probes short (another bus of this process got through).
        self._wake: asyncio.Event | None = None

    def open(self) -> None:
        """Start watching (the adapter connected)."""
        self._open = True
        _quiet.watch(self)
        _healths.setdefault(self.link.name, weakref.WeakSet()).add(self)

    async def close(self) -> None:
        """Stop watching and probing (the adapter is disconnecting)."""
        self._open = False
        _quiet.forget(self)
        _healths.get(self.link.name, weakref.WeakSet()).discard(self)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def watch(self, client: Any) -> None:
        """Be told when a connection of ``client`` (an `AIOKafkaClient`) breaks or times out.
        Connections pick their callback up when they are made, so this is done before the
        client connects."""
        closed = client._on_connection_closed

        def on_closed(conn: Any, reason: Any) -> None:
            closed(conn, reason)
            if reason in _BROKEN:
                self.suspect(f"a connection to {conn.host}:{conn.port} broke")

        client._on_connection_closed = on_closed

    def suspect(self, reason: str) -> None:
        """Something failed that an outage would explain: probe (one probe at a time)."""
        if self._task is None and self._open:
            self._task = asyncio.get_running_loop().create_task(self._check(reason))

    def lost(self, reason: str) -> None:
        """Something failed that only an outage explains (a send found no connection)."""
        if not self._open:
            return
        self._down(reason)
        self.suspect(reason)

    def hushing(self, now: float) -> bool:
        """Whether aiokafka's lines about reaching the broker are noise now (see `quiet`): while
        checking the broker, while it is unreachable, and for a while after it is back."""
        return not self.link.up or self._task is not None or now < self._quiet_until

    def outage(self) -> asyncio.Future[None]:
        """A future that is done once the broker is unreachable (at once if it is now)."""
        if self._outage is None:
            self._outage = asyncio.get_running_loop().create_future()
            if not self.link.up:
                self._outage.set_result(None)
        return self._outage

    def _down(self, reason: object) -> None:
        if self.link.up:
            self.link.lost(reason)
        outage, self._outage = self._outage, None
        if outage is not None and not outage.done():
            outage.set_result(None)

    async def _check(self, reason: str) -> None:
        def failed(error: BaseException) -> None:
            if self.link.up:  # the first failed probe: an outage begins
                self._down(f"{reason}; {error}")
            else:
                self.link.retrying(error)

        async def probe() -> bool:
            await self._probe()
            return True

        try:
            answered = await keep_reconnecting(
                probe,
                on_failure=failed,
                keep_going=lambda: self._open,
                delays=itertools.chain((0.0,), backoff_delays()),  # the first probe at once
                pause=self._pause,
            )
            if answered and not self.link.up:
                self._outage = None
                self._quiet_until = time.monotonic() + _quiet.GRACE
                self.link.restored()
                _back(self)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds before the next probe, or until `wake`."""
        if delay <= 0:
            return
        wake = self._wake = asyncio.Event()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), delay)

    def wake(self) -> None:
        """Probe now: the broker may be back (another bus of this process reached it)."""
        if self._wake is not None:
            self._wake.set()


#: The connected adapters' `Health`, by broker name: when one gets through, the others of the
#: same broker probe at once instead of after their backoff.
_healths: dict[str, weakref.WeakSet[Health]] = {}


def _back(health: Health) -> None:
    for other in list(_healths.get(health.link.name, ())):
        if other is not health:
            other.wake()
