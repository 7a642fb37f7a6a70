"""One pipelined command connection: writes from every caller are batched, replies come back
in order, and the connection comes back by itself after Redis restarts.

Callers never wait for a round trip they don't need: `send` queues a command and returns; a
writer task writes everything queued since its last write in one go (so concurrent publishers
share writes, and a burst from one publisher goes out in large batches), and a reader task
hands each reply, in order, to the callback that was queued with its command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from amb_core.backoff import keep_trying
from amb_core.errors import BrokerUnavailableError
from amb_redis._replies import replies
from amb_redis._scripts import Script

logger = logging.getLogger("amb")

Callback = Callable[[Any], None]
#: (packed command, callback for its reply or None, re-send it after a reconnect?)
_Entry = tuple[bytes, "Callback | None", bool]
Connector = Callable[[], Awaitable[AbstractConnection]]


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
        connect: Connector,
        *,
        address: str,
        scripts: tuple[Script, ...],
        max_pending: int,
        on_reconnect: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._address = address
        self._scripts = scripts
        self._max_pending = max_pending
        self._low_water = max_pending // 2
        self._on_reconnect = on_reconnect
        self._unsent: deque[_Entry] = deque()
        self._inflight: deque[_Entry] = deque()
        self._wakeup = asyncio.Event()
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._empty_waiters: list[asyncio.Future[None]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self) -> None:
        """Connect, or raise `BrokerUnavailableError`."""
        connection = await self._connect()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(connection))

    # -- queueing -----------------------------------------------------------------------

    def send(self, data: bytes, callback: Callback | None = None, resend: bool = False) -> None:
        """Queue a command; ``callback`` gets its reply (a `ResponseError` or
        `BrokerUnavailableError` instance when it failed)."""
        if self._closing:
            raise BrokerUnavailableError("the Redis adapter is closed")
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
                    f"Redis at {self._address} did not take commands for {timeout} s"
                ) from None

    async def call(self, data: bytes, *, resend: bool = False, timeout: float | None = None) -> Any:
        """Queue a command and return its reply; raise what it raised."""
        if self._closing:
            raise BrokerUnavailableError("the Redis adapter is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry: _Entry = (data, _resolver(future), resend)
        self._unsent.append(entry)
        if len(self._unsent) == 1:
            self._wakeup.set()
        try:
            reply = await (future if timeout is None else asyncio.wait_for(future, timeout))
        except asyncio.TimeoutError:
            if entry in self._unsent:
                self._unsent.remove(entry)
                raise BrokerUnavailableError(
                    f"Redis at {self._address} was unreachable for {timeout} s; the command was not sent"
                ) from None
            raise BrokerUnavailableError(
                f"Redis at {self._address} did not answer within {timeout} s (the command may still take effect)"
            ) from None
        if isinstance(reply, Exception):
            raise reply
        return reply

    # -- the connection -------------------------------------------------------------------

    async def _supervise(self, connection: AbstractConnection) -> None:
        first = True
        while True:
            error = await self._session(connection, first)
            first = False
            if self._closing:
                return
            lost_at = time.monotonic()
            logger.warning("lost the connection to Redis at %s (%s); reconnecting", self._address, error)
            self._requeue()
            connection = await self._reconnect()
            logger.warning(
                "reconnected to Redis at %s after %.1f s; sending the %d commands queued meanwhile",
                self._address,
                time.monotonic() - lost_at,
                len(self._unsent),
            )

    async def _session(self, connection: AbstractConnection, first: bool) -> BaseException | None:
        """Run the reader and writer on ``connection`` until one fails; return why."""
        loop = asyncio.get_running_loop()
        # Scripts first: a restarted Redis has forgotten them and re-sent publishes call them by SHA.
        self._unsent.extendleft(reversed([(script.load(), None, False) for script in self._scripts]))
        reader = loop.create_task(self._read(connection))
        writer = loop.create_task(self._write(connection))
        try:
            if not first:
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
        front of the queue, in order; the others fail."""
        unanswered, self._inflight = self._inflight, deque()
        resent = [entry for entry in unanswered if entry[2]]
        self._unsent.extendleft(reversed(resent))
        lost = BrokerUnavailableError(f"lost the connection to Redis at {self._address}")
        for _, callback, resend in unanswered:
            if not resend and callback is not None:
                callback(lost)

    async def _reconnect(self) -> AbstractConnection:
        return await keep_trying(
            self._connect, retry_on=BrokerUnavailableError, what=f"Redis at {self._address}"
        )

    async def _write(self, connection: AbstractConnection) -> None:
        wakeup = self._wakeup
        while True:
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
                _, callback, _ = entry = inflight.popleft()
                if callback is not None:
                    callback(reply)
                elif isinstance(reply, ResponseError):
                    self._failed(entry, reply)
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
                    self.send(packed, callback, resend)
                    return
        logger.error("Redis refused a command: %s", error)

    def _wake_room_waiters(self) -> None:
        waiters, self._room_waiters = self._room_waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- closing --------------------------------------------------------------------------

    async def close(self, timeout: float) -> int:
        """Let queued commands reach Redis (for at most ``timeout`` seconds), then close.
        Returns how many queued publishes and acknowledgements were not sent or confirmed."""
        if self._unsent or self._inflight:
            waiter = asyncio.get_running_loop().create_future()
            self._empty_waiters.append(waiter)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        leftover = [entry for entry in (*self._inflight, *self._unsent) if entry[2]]
        lost = BrokerUnavailableError("the adapter was closed")
        for _, callback, _ in (*self._inflight, *self._unsent):
            if callback is not None:
                callback(lost)
        self._inflight.clear()
        self._unsent.clear()
        self._wake_room_waiters()
        return len(leftover)


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
