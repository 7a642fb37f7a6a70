"""Reading replies in batches.

redis-py's pure-Python parser awaits the socket several times per reply, which costs more than
everything else a message goes through. After redis-py has connected (TLS, AUTH, SELECT are
its job), `reader` reads whatever the socket has and parses every complete RESP2 reply in it
in one synchronous pass. Where the connection does not expose its stream (a future redis-py,
say), it falls back to redis-py's ``read_response``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

_READ_SIZE = 1 << 16


class _Incomplete(Exception):
    """The buffer ends in the middle of a reply; it needs at least ``need`` bytes."""

    def __init__(self, need: int = 0) -> None:
        self.need = need


def parse(buffer: bytes, position: int) -> tuple[Any, int]:
    """The RESP2 reply starting at ``position`` and where the next one starts; raises
    `_Incomplete` when the buffer ends first. Errors come back as `ResponseError` values."""
    end = buffer.find(b"\r\n", position)
    if end < 0:
        raise _Incomplete
    kind = buffer[position]
    if kind == 36:  # $ bulk string
        length = int(buffer[position + 1 : end])
        if length < 0:
            return None, end + 2
        stop = end + 2 + length
        if len(buffer) < stop + 2:
            raise _Incomplete(stop + 2)
        return buffer[end + 2 : stop], stop + 2
    if kind == 42:  # * array
        count = int(buffer[position + 1 : end])
        if count < 0:
            return None, end + 2
        position = end + 2
        items: list[Any] = []
        append = items.append
        size = len(buffer)
        for _ in range(count):
            # Bulk strings inline: they are nearly every element of a Pub/Sub message.
            if position < size and buffer[position] == 36:
                end = buffer.find(b"\r\n", position)
                if end < 0:
                    raise _Incomplete
                length = int(buffer[position + 1 : end])
                if length < 0:
                    append(None)
                    position = end + 2
                    continue
                stop = end + 2 + length
                if size < stop + 2:
                    raise _Incomplete(stop + 2)
                append(buffer[end + 2 : stop])
                position = stop + 2
            else:
                item, position = parse(buffer, position)
                append(item)
        return items, position
    if kind == 58:  # : integer
        return int(buffer[position + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return buffer[position + 1 : end], end + 2
    if kind == 45:  # - error
        return ResponseError(buffer[position + 1 : end].decode("utf-8", "replace")), end + 2
    raise RedisConnectionError(f"protocol error: unexpected reply {buffer[position : position + 20]!r}")


async def replies(connection: AbstractConnection) -> AsyncIterator[list[Any]]:
    """Every reply on ``connection``, in batches of what arrived together. Error replies are
    `ResponseError` values; a closed connection raises redis-py's `ConnectionError`."""
    stream = getattr(connection, "_reader", None)
    if not isinstance(stream, asyncio.StreamReader):
        async for replies_read in _fallback(connection):
            yield replies_read
        return
    read = stream.read
    buffer = b""
    need = 0  # the buffer cannot hold a whole reply before it is this long
    while True:
        chunk = await read(_READ_SIZE)
        if not chunk:
            raise RedisConnectionError("Redis closed the connection")
        buffer = buffer + chunk if buffer else chunk
        size = len(buffer)
        if size < need:
            continue  # a large reply still arriving: do not parse it again and again
        batch: list[Any] = []
        position = 0
        try:
            while position < size:
                reply, position = parse(buffer, position)
                batch.append(reply)
            need = 0
        except _Incomplete as incomplete:
            need = incomplete.need - position
        buffer = buffer[position:]
        if batch:
            yield batch


async def _fallback(connection: AbstractConnection) -> AsyncIterator[list[Any]]:
    read = connection.read_response
    while True:
        try:
            reply = await read()
        except ResponseError as error:
            reply = error
        yield [reply]
