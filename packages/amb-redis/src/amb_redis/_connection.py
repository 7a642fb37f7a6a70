"""Opening connections: redis-py's connection class does the handshake (TLS, AUTH, SELECT), this
module sets it up for long-lived connections the adapter reads itself, bounds it in time and
makes sure a failed or cancelled attempt leaves no socket behind."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from amb_core.errors import BrokerUnavailableError
from amb_redis._errors import Boundary


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
