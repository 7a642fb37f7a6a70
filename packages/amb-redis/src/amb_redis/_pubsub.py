"""One Pub/Sub connection for all of an adapter's channel and pattern subscriptions.

A single reader task reads every message and hands it on; subscribing is reference counted
per channel or glob, and `subscribe` returns once Redis has confirmed the subscription (after
that, every message published to it reaches this connection). After a lost connection it
reconnects with backoff (reporting on the adapter's `Link`) and subscribes to everything
again; `restored` says when that is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from redis.asyncio.connection import AbstractConnection

from amb_core.adapter import BrokerUnavailableError, Link
from amb_redis._connection import Connector, keep_connected
from amb_redis._resp import command
from amb_redis._resp_reader import replies

logger = logging.getLogger("amb.redis")

OnMessage = Callable[[bytes, bytes], Awaitable[None]]
OnPatternMessage = Callable[[bytes, bytes, bytes], Awaitable[None]]

CHANNEL = b"subscribe"
PATTERN = b"psubscribe"
_UNSUBSCRIBE = {CHANNEL: b"UNSUBSCRIBE", PATTERN: b"PUNSUBSCRIBE"}
_SUBSCRIBE = {CHANNEL: b"SUBSCRIBE", PATTERN: b"PSUBSCRIBE"}


class _Interest:
    """One channel or glob this connection is subscribed to, and who is waiting for Redis to
    confirm it."""

    __slots__ = ("confirmed", "references", "waiters")

    def __init__(self) -> None:
        self.references = 0
        self.confirmed = False
        self.waiters: list[asyncio.Future[None]] = []

    def wait(self) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        return waiter

    def confirm(self) -> None:
        self.confirmed = True
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


class PubSubConnection:
    def __init__(
        self,
        connector: Connector,
        *,
        link: Link,
        on_message: OnMessage,
        on_pattern_message: OnPatternMessage,
        on_lost: Callable[[str], None],
        on_restored: Callable[[], None],
    ) -> None:
        self._connector = connector
        self._name = connector.name
        self._boundary = connector.boundary
        self._link = link
        self._on_message = on_message
        self._on_pattern_message = on_pattern_message
        self._on_lost = on_lost
        self._on_restored = on_restored
        self._interests: dict[tuple[bytes, bytes], _Interest] = {}
        # Subscribe commands sent and not yet confirmed, per (kind, name), oldest first: a
        # confirmation belongs to the oldest one (a channel can be left and joined again
        # before Redis has answered).
        self._unconfirmed: dict[tuple[bytes, bytes], deque[_Interest]] = {}
        self._out: list[bytes] = []
        self._wakeup = asyncio.Event()
        self._connection: AbstractConnection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._restored = False
        self._first = True

    @property
    def restored(self) -> bool:
        """Connected, and every subscription made before the last reconnect confirmed again."""
        return self._restored

    def start(self, connection: AbstractConnection) -> None:
        """Run on ``connection`` (opened by the adapter), and on the ones after it."""
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(connection))

    async def subscribe(self, kind: bytes, name: bytes, timeout: float) -> None:
        """Subscribe to channel or glob ``name`` (``kind`` is `CHANNEL` or `PATTERN`) and return
        once Redis has confirmed it; raise `BrokerUnavailableError` after ``timeout`` seconds.
        Every call, even a failed one, holds a reference that `unsubscribe` gives back."""
        key = (kind, name)
        interest = self._interests.get(key)
        if interest is None:
            interest = self._interests[key] = _Interest()
            self._request(key, interest)
        interest.references += 1
        if interest.confirmed:
            return
        try:
            await asyncio.wait_for(interest.wait(), timeout)
        except asyncio.TimeoutError:
            raise BrokerUnavailableError(
                f"{self._name} did not confirm the subscription to {name.decode()!r} within {timeout} s"
            ) from None

    def unsubscribe(self, kind: bytes, name: bytes) -> None:
        key = (kind, name)
        interest = self._interests.get(key)
        if interest is None:
            return
        interest.references -= 1
        if interest.references <= 0:
            del self._interests[key]
            if self._connection is not None:
                self._queue(command(_UNSUBSCRIBE[kind], name))

    def _request(self, key: tuple[bytes, bytes], interest: _Interest) -> None:
        if self._connection is not None:  # else the next connection subscribes to everything
            self._unconfirmed.setdefault(key, deque()).append(interest)
            self._queue(command(_SUBSCRIBE[key[0]], key[1]))

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._wakeup.set()

    # -- the connection -------------------------------------------------------------------

    async def _supervise(self, connection: AbstractConnection) -> None:
        # Every ungrouped subscription, reply and group wake-up of the adapter arrives on it.
        await keep_connected(
            self._connector,
            self._link,
            connection,
            what="Pub/Sub connection",
            session=self._session,
            lost=self._lost,
            closing=lambda: self._closing,
        )

    def _lost(self, reason: str) -> None:
        # Pub/Sub keeps nothing for a subscriber that is away: the Link's WARNING says the
        # connection was lost, DEBUG says what it carried.
        self._on_lost(reason)
        logger.debug(
            "%s: the Pub/Sub connection (%d channels and patterns) is lost; messages published "
            "to them until it is back are not delivered",
            self._name,
            len(self._interests),
        )

    async def _session(self, connection: AbstractConnection) -> BaseException | None:
        loop = asyncio.get_running_loop()
        # The adapter's first connection was subscribed to nothing yet: nothing to restore.
        first, self._first = self._first, False
        self._unconfirmed.clear()
        self._out.clear()
        self._connection = connection
        # Until Redis confirms again, a subscription on the same channel must wait too.
        restored = []
        for key, interest in self._interests.items():
            interest.confirmed = False
            self._request(key, interest)
            restored.append(interest.wait())
        reader = loop.create_task(self._read(connection))
        writer = loop.create_task(self._write(connection))
        notify = None
        if first:
            self._restored = True
        else:
            notify = loop.create_task(self._notify_when_restored(restored))
        try:
            done, _ = await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            return next((task.exception() for task in done if not task.cancelled()), None)
        finally:
            self._connection = None
            self._restored = False
            tasks = (reader, writer) if notify is None else (reader, writer, notify)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await connection.disconnect(nowait=True)
            except Exception:  # pragma: no cover - closing a broken socket
                logger.debug("error closing a Redis connection", exc_info=True)

    async def _notify_when_restored(self, restored: list[asyncio.Future[None]]) -> None:
        await asyncio.gather(*restored)
        self._restored = True
        self._on_restored()

    async def _write(self, connection: AbstractConnection) -> None:
        while True:
            if not self._out:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            data, self._out = b"".join(self._out), []
            await connection.send_packed_command(data, check_health=False)

    async def _read(self, connection: AbstractConnection) -> None:
        on_message = self._on_message
        on_pattern_message = self._on_pattern_message
        async for batch in replies(connection):
            for reply in batch:
                kind = reply[0]
                try:
                    if kind == b"message":
                        await on_message(reply[1], reply[2])
                        continue
                    if kind == b"pmessage":
                        await on_pattern_message(reply[1], reply[2], reply[3])
                        continue
                except Exception:
                    logger.exception("could not dispatch a message from Redis channel %r", reply[-2])
                    continue
                if kind in (CHANNEL, PATTERN):
                    pending = self._unconfirmed.get((kind, reply[1]))
                    if pending:
                        pending.popleft().confirm()

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        for interest in self._interests.values():
            for waiter in interest.waiters:
                if not waiter.done():
                    waiter.set_exception(BrokerUnavailableError(f"{self._name}: the adapter was closed"))
        self._interests.clear()
