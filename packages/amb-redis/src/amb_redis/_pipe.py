"""One pipelined command connection: writes from every caller are batched, replies come back
in order, and the connection comes back by itself after Redis restarts.

Callers never wait for a round trip they don't need: `send` queues a command and returns; a
writer task writes everything queued since its last write in one go (so concurrent publishers
share writes, and a burst from one publisher goes out in large batches), and a reader task
hands each reply, in order, to the callback that was queued with its command.

After a lost connection the pipe reconnects by itself and stays *gated*: only urgent commands
(the scripts, the groups' registrations) are written until the adapter has restored what it
needs and calls `open_gate`; then what was queued meanwhile, and what was in flight when the
connection went, is written in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from amb_core.adapter import BrokerUnavailableError, Link, throttled
from amb_redis._connection import Connector, keep_connected
from amb_redis._resp_reader import replies
from amb_redis._scripts import Script

logger = logging.getLogger("amb.redis")

Callback = Callable[[Any], None]
#: (packed command, callback for its reply or None, re-send it after a reconnect?)
_Entry = tuple[bytes, "Callback | None", bool]
#: Told about error replies to commands sent without a callback; True if it handled the error.
ErrorHook = Callable[[ResponseError], bool]


class CommandPipe:
    """A pipelined Redis connection shared by every publisher and group reader of one adapter.

    A command queued with ``resend=True`` (a publish, an XACK) survives a lost connection: it
    is written again once the connection is back, since Redis may or may not have run it (a
    publish then arrives at least once). Other commands fail with `BrokerUnavailableError`.
    At most ``max_pending`` commands wait for a reply; `wait_room` makes publishers wait for
    room, which is the backpressure of fire-and-forget publishing.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        link: Link,
        scripts: tuple[Script, ...],
        max_pending: int,
        on_lost: Callable[[str], None],
        on_reconnect: Callable[[], None],
        on_error: ErrorHook,
    ) -> None:
        self._connector = connector
        self._boundary = connector.boundary
        self._name = connector.name
        self._link = link
        self._scripts = scripts
        self._max_pending = max_pending
        self._low_water = max_pending // 2
        self._on_lost = on_lost
        self._on_reconnect = on_reconnect
        self._on_error = on_error
        self._unsent: deque[_Entry] = deque()
        self._urgent: deque[_Entry] = deque()
        self._inflight: deque[_Entry] = deque()
        self._wakeup = asyncio.Event()
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._empty_waiters: list[asyncio.Future[None]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._gated = False
        #: Whether a connection is open (False from a loss until the reconnect succeeded).
        self.connected = False

    def start(self, connection: AbstractConnection) -> None:
        """Run on ``connection`` (opened by the adapter), and on the ones after it."""
        self.connected = True
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(connection))

    # -- queueing -----------------------------------------------------------------------

    def send(self, data: bytes, callback: Callback | None = None, resend: bool = False) -> None:
        """Queue a command; ``callback`` gets its reply (a `ResponseError` or
        `BrokerUnavailableError` instance when it failed)."""
        if self._closing:
            raise BrokerUnavailableError(f"{self._name}: the adapter is closed")
        self._unsent.append((data, callback, resend))
        if len(self._unsent) == 1:
            self._wakeup.set()

    @property
    def full(self) -> bool:
        return len(self._unsent) + len(self._inflight) >= self._max_pending

    async def wait_room(self, timeout: float) -> None:
        """Wait until fewer than ``max_pending`` commands are queued or unanswered."""
        while self.full:
            waiter = asyncio.get_running_loop().create_future()
            self._room_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout)
            except asyncio.TimeoutError:
                raise BrokerUnavailableError(
                    f"{self._name} did not take commands for {timeout} s (outage_timeout)"
                ) from None

    async def call(
        self, data: bytes, *, resend: bool = False, timeout: float | None = None, urgent: bool = False
    ) -> Any:
        """Queue a command and return its reply; raise what it raised (mapped by the adapter's
        error boundary). ``urgent`` commands are written even while the pipe is gated."""
        if self._closing:
            raise BrokerUnavailableError(f"{self._name}: the adapter is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry: _Entry = (data, _resolver(future), resend)
        if urgent and self._gated:
            self._urgent.append(entry)
            self._wakeup.set()
        else:
            self._unsent.append(entry)
            if len(self._unsent) == 1:
                self._wakeup.set()
        try:
            reply = await (future if timeout is None else asyncio.wait_for(future, timeout))
        except asyncio.TimeoutError:
            for queue in (self._unsent, self._urgent):
                if entry in queue:
                    queue.remove(entry)
                    raise BrokerUnavailableError(
                        f"{self._name} was unreachable for {timeout} s; the command was not sent"
                    ) from None
            raise BrokerUnavailableError(
                f"{self._name} did not answer within {timeout} s (the command may still take effect)"
            ) from None
        if isinstance(reply, Exception):
            raise self._boundary.translate(reply)
        return reply

    def open_gate(self) -> None:
        """After a reconnect: write what was queued (see the module docstring)."""
        if self._gated:
            self._gated = False
            self._wakeup.set()

    # -- the connection -------------------------------------------------------------------

    async def _supervise(self, connection: AbstractConnection) -> None:
        await keep_connected(
            self._connector,
            self._link,
            connection,
            what="command connection",
            session=self._session,
            lost=self._lost,
            closing=lambda: self._closing,
            reconnected=self._reconnected,
            broke=self._disconnected,
        )

    def _reconnected(self) -> None:
        self.connected = True

    def _disconnected(self) -> None:
        self.connected = False

    def _lost(self, reason: str) -> None:
        self.connected = False
        self._gated = True
        self._on_lost(reason)
        self._requeue()

    async def _session(self, connection: AbstractConnection) -> BaseException | None:
        """Run the reader and writer on ``connection`` until one fails; return why."""
        loop = asyncio.get_running_loop()
        # Scripts first: a restarted Redis has forgotten them and re-sent publishes call them by SHA.
        loads = [(script.load(), None, False) for script in self._scripts]
        (self._urgent if self._gated else self._unsent).extendleft(reversed(loads))
        reader = loop.create_task(self._read(connection))
        writer = loop.create_task(self._write(connection))
        try:
            if self._gated:
                self._on_reconnect()
            done, _ = await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            return next((task.exception() for task in done if not task.cancelled()), None)
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            await _close(connection)

    def _requeue(self) -> None:
        """After a lost connection: unanswered commands that may be re-sent go back to the
        front of the queue, in order; the others (and urgent ones never written) fail."""
        unanswered, self._inflight = self._inflight, deque()
        stale, self._urgent = self._urgent, deque()
        resent = [entry for entry in unanswered if entry[2]]
        self._unsent.extendleft(reversed(resent))
        lost = BrokerUnavailableError(f"lost the connection to {self._name}")
        for _, callback, resend in unanswered:
            if not resend and callback is not None:
                callback(lost)
        for _, callback, _ in stale:
            if callback is not None:
                callback(lost)

    async def _write(self, connection: AbstractConnection) -> None:
        wakeup = self._wakeup
        while True:
            if self._gated:
                if not self._urgent:
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                batch, self._urgent = self._urgent, deque()
            else:
                if not self._unsent:
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                batch, self._unsent = self._unsent, deque()
            self._inflight.extend(batch)
            await connection.send_packed_command(b"".join([entry[0] for entry in batch]), check_health=False)

    async def _read(self, connection: AbstractConnection) -> None:
        inflight = self._inflight
        async for batch in replies(connection):
            for reply in batch:
                entry = inflight.popleft()
                if reply.__class__ is ResponseError:  # what the parser makes of every error reply
                    self._failed(entry, reply)
                    continue
                callback = entry[1]
                if callback is not None:
                    callback(reply)
            if self._room_waiters and len(self._unsent) + len(inflight) <= self._low_water:
                self._wake_room_waiters()
            if self._empty_waiters and not inflight and not self._unsent:
                for waiter in self._empty_waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                self._empty_waiters.clear()

    def _failed(self, entry: _Entry, error: ResponseError) -> None:
        data, callback, resend = entry
        if str(error).startswith("NOSCRIPT"):
            # Scripts were flushed while we were connected: run this call as EVAL, which
            # also loads the script for the calls that follow.
            for script in self._scripts:
                packed = script.as_eval(data)
                if packed is not None:
                    # Only urgent commands are written while the pipe is gated.
                    (self._urgent if self._gated else self._unsent).appendleft((packed, callback, resend))
                    self._wakeup.set()
                    return
        if callback is not None:
            callback(error)
        elif not self._on_error(error):
            throttled(
                logger,
                "refused:" + self._name,
                "%s refused a command: %s",
                self._name,
                error,
                level=logging.ERROR,
            )

    def _wake_room_waiters(self) -> None:
        waiters, self._room_waiters = self._room_waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- closing --------------------------------------------------------------------------

    async def close(self, timeout: float) -> list[bytes]:
        """Let queued commands reach Redis (for at most ``timeout`` seconds, and only while
        connected), then close. Returns the publishes and acknowledgements (packed) that were
        not sent or not confirmed."""
        if (self._unsent or self._inflight) and self.connected and not self._gated:
            waiter = asyncio.get_running_loop().create_future()
            self._empty_waiters.append(waiter)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        self.connected = False
        leftover = [entry for entry in (*self._inflight, *self._unsent) if entry[2]]
        lost = BrokerUnavailableError(f"{self._name}: the adapter was closed")
        for _, callback, _ in (*self._inflight, *self._unsent, *self._urgent):
            if callback is not None:
                callback(lost)
        self._inflight.clear()
        self._unsent.clear()
        self._urgent.clear()
        self._wake_room_waiters()
        return [entry[0] for entry in leftover]


def _resolver(future: asyncio.Future[Any]) -> Callback:
    def resolve(reply: Any) -> None:
        if not future.done():
            future.set_result(reply)

    return resolve


async def _close(connection: AbstractConnection) -> None:
    try:
        await connection.disconnect(nowait=True)
    except Exception:  # pragma: no cover - closing a broken socket
        logger.debug("error closing a Redis connection", exc_info=True)
