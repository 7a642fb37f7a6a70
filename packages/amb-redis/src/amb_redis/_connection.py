"""Opening connections and keeping them open: redis-py's connection class does the handshake
(TLS, AUTH, SELECT), this module sets it up for long-lived connections the adapter reads itself,
bounds it in time, makes sure a failed or cancelled attempt leaves no socket behind, and
(`keep_connected`) opens a new one whenever one is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from amb_core.adapter import BrokerRefusedError, BrokerUnavailableError, Link, backoff_delays
from amb_redis._errors import Boundary

logger = logging.getLogger("amb.redis")


class Connector:
    """Opens connections to one Redis server, each ready to use (handshake done, ``PING``
    answered)."""

    def __init__(self, url: str, options: dict[str, Any], connect_timeout: float) -> None:
        self.connection_class, self.kwargs, self.address = connection_settings(url, options, connect_timeout)
        #: "Redis at 127.0.0.1:6379": names the server in every log line and error.
        self.name = f"Redis at {self.address}"
        self.boundary = Boundary(self.name, self.kwargs.get("password"))
        self.connect_timeout = connect_timeout

    async def open(self) -> AbstractConnection:
        """A connection, or `BrokerUnavailableError` / `BrokerRefusedError`. Not bounded in
        time: the bus cancels the first `connect` after ``connect_timeout`` (then nothing is
        left open); reconnects use `open_within`."""
        connection = self.connection_class(**self.kwargs)
        try:
            with self.boundary.mapping("(connecting)"):
                await connection.connect()  # type: ignore[no-untyped-call]
                # A restarted Redis accepts connections while it loads its data, and answers
                # every command with LOADING until it is done: not back yet.
                await connection.send_command("PING", check_health=False)
                await connection.read_response()
        except BaseException:
            abort(connection)
            raise
        return connection

    async def open_within(self, timeout: float | None = None) -> AbstractConnection:
        """`open`, bounded by ``timeout`` (default: ``connect_timeout``): a peer that accepts
        and never answers must not hold up reconnecting for good."""
        timeout = self.connect_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(self.open(), timeout)
        except asyncio.TimeoutError:
            raise BrokerUnavailableError(
                f"{self.name} did not answer within connect_timeout ({timeout} s)"
            ) from None


async def keep_connected(
    connector: Connector,
    link: Link,
    connection: AbstractConnection,
    *,
    what: str,
    session: Callable[[AbstractConnection], Awaitable[BaseException | None]],
    lost: Callable[[str], None],
    closing: Callable[[], bool],
    reconnected: Callable[[], None] = lambda: None,
    broke: Callable[[], None] = lambda: None,
) -> None:
    """Run ``session`` on ``connection``, and on a new connection each time one is lost, until
    ``closing()``. The adapter's two connections (``what``: "command connection", "Pub/Sub
    connection") share this loop.

    ``session(connection)`` runs until the connection fails, closes it and returns why (None:
    it just closed); ``lost(reason)`` is then told, unless the adapter is closing. A new
    connection is opened with `Link.reconnect` (backoff; each failure logged by the link), and
    ``reconnected()`` is called once it is open, before its session starts.

    Everything the adapter does goes through these connections, so they must never stop
    silently: an unexpected exception (a bug) is logged, ``broke()`` is called, the connection
    is dropped, and the loop goes on after a pause that grows while the trouble lasts.
    """
    trouble = backoff_delays(0.1, 5.0)
    current: AbstractConnection | None = connection
    while not closing():
        try:
            if current is None:
                current = await link.reconnect(
                    connector.open_within,
                    retry_on=(BrokerUnavailableError, BrokerRefusedError),
                    keep_going=lambda: not closing(),
                )
                if current is None:
                    return
                reconnected()
            error = await session(current)
            current = None
            if closing():
                return
            lost(connector.boundary.reason(error) if error is not None else "the connection closed")
        except Exception:
            logger.exception("%s: the %s failed unexpectedly; reconnecting", connector.name, what)
            broke()
            if current is not None:
                with contextlib.suppress(Exception):
                    await current.disconnect(nowait=True)
                current = None
            await asyncio.sleep(next(trouble))


def abort(connection: AbstractConnection) -> None:
    """Close ``connection`` at once, without awaiting anything, so that it also works in code a
    cancellation is running through (an await there would be cancelled again)."""
    close = getattr(connection, "_close", None)
    if callable(close):
        close()  # redis-py >= 5.1: closes the writer and forgets the streams
        return
    writer = getattr(connection, "_writer", None)  # pragma: no cover - older redis-py
    if writer is not None:  # pragma: no cover
        writer.close()


def connection_settings(
    url: str, options: dict[str, Any], connect_timeout: float
) -> tuple[type[AbstractConnection], dict[str, Any], str]:
    """redis-py's connection class and arguments for ``url`` and ``options``, adjusted for
    long-lived connections that this adapter reads and reconnects itself."""
    options = dict(options)
    options.setdefault("protocol", 2)
    # redis-py's own TCP connect timeout is the policy's, unless set explicitly: one setting
    # decides how long connecting may take, and the bus bounds the whole handshake by it.
    options.setdefault("socket_connect_timeout", connect_timeout)
    pool = ConnectionPool.from_url(url, **options)
    # Replies are parsed here as RESP2 bytes (RESP3 turns Pub/Sub messages into push
    # notifications, and redis-py 8 ties maintenance notifications to it); reads wait for
    # messages indefinitely (a dead peer is noticed by TCP keepalive and by the next write);
    # redis-py never retries by itself (the adapter reconnects, and a retry inside redis-py
    # would only stretch the time a connect or a lost connection goes unnoticed).
    kwargs = {key: value for key, value in pool.connection_kwargs.items() if "maint_notifications" not in key}
    kwargs.update(
        decode_responses=False,
        protocol=2,
        socket_timeout=None,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        retry_on_error=[],
        health_check_interval=0,
    )
    if kwargs.get("socket_connect_timeout") is None:
        kwargs["socket_connect_timeout"] = connect_timeout
    if "path" not in kwargs:  # TCP: notice a peer that vanished without closing
        kwargs.setdefault("socket_keepalive", True)
    connection_class = pool.connection_class
    connection_class(**kwargs)  # an option redis-py does not take fails here, not at connect
    if "path" in kwargs:
        address = str(kwargs["path"])
    else:
        address = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    return connection_class, kwargs, address
