"""Reading replies in batches, in time linear in their size.

redis-py's pure-Python parser awaits the socket several times per reply, which costs more than
everything else a message goes through. After redis-py has connected (TLS, AUTH, SELECT are
its job), `replies` reads whatever the socket has and parses every complete RESP2 reply in it
in one synchronous pass. Where the connection does not expose its stream (a future redis-py,
say), it falls back to redis-py's ``read_response``.

Small replies (nearly all of them) are parsed straight from what one read returned. A reply
that does not fit in a read or two is collected apart (`_whole_reply`): a bytearray grows by
what arrives (amortised linear), a resumable scan follows the reply's structure without
copying anything, and a bulk string whose length is known is read in one ``readexactly``; the
reply is parsed once, when it is complete. Reading a 40 MB reply used to re-join the buffer
on every 64 KiB read, which is quadratic (11.5 s for 40 MB, stalling every reply behind it).
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


def _scan(data: bytearray, position: int, open_arrays: list[int]) -> tuple[int, int]:
    """Follow the structure of the reply being collected in ``data`` from ``position``, without
    copying it, and say how far it got: ``(position, 0)`` once the reply is complete (it ends at
    ``position``), ``(position, n)`` when the item at ``position`` is a bulk string still missing
    ``n`` bytes, ``(position, -1)`` when a header line is not complete yet. ``open_arrays``
    holds the items still expected by each array the scan is inside; with ``position`` it is
    the state to resume from when more has arrived."""
    size = len(data)
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            return position, -1
        kind = data[position]
        if kind == 36:  # $ bulk string
            length = int(data[position + 1 : end])
            stop = end + 4 + length if length >= 0 else end + 2
            if size < stop:
                return position, stop - size
            position = stop
        elif kind == 42:  # * array
            count = int(data[position + 1 : end])
            position = end + 2
            if count > 0:
                open_arrays.append(count)
                continue
        else:  # a one-line reply; anything malformed is `parse`'s to report
            position = end + 2
        # One whole item ends at `position`: it may complete the arrays around it.
        while open_arrays:
            open_arrays[-1] -= 1
            if open_arrays[-1]:
                break
            open_arrays.pop()
        else:
            return position, 0


async def _whole_reply(stream: asyncio.StreamReader, start: bytes) -> bytes:
    """``start``, the beginning of a large reply, followed by the rest of that reply (and
    perhaps the beginning of the next), read in time linear in the reply's size."""
    data = bytearray(start)
    position = 0
    open_arrays: list[int] = []
    while True:
        position, missing = _scan(data, position, open_arrays)
        if missing == 0:
            return bytes(data)
        try:
            if missing > _READ_SIZE:
                more = await stream.readexactly(missing)  # the rest of a long bulk string, at once
            else:
                more = await stream.read(_READ_SIZE)
        except asyncio.IncompleteReadError:
            more = b""
        if not more:
            raise RedisConnectionError("Redis closed the connection")
        data += more


async def read_replies(stream: asyncio.StreamReader) -> AsyncIterator[list[Any]]:
    """Every reply on ``stream``, in batches of what arrived together. Error replies are
    `ResponseError` values; a closed connection raises redis-py's `ConnectionError`."""
    read = stream.read
    buffer = b""
    while True:
        chunk = await read(_READ_SIZE)
        if not chunk:
            raise RedisConnectionError("Redis closed the connection")
        buffer = buffer + chunk if buffer else chunk  # what is left over is less than a read
        while True:
            batch: list[Any] = []
            position = 0
            size = len(buffer)
            try:
                while position < size:
                    reply, position = parse(buffer, position)
                    batch.append(reply)
                buffer = b""
                large = False
            except _Incomplete as incomplete:
                buffer = buffer[position:]
                large = len(buffer) >= _READ_SIZE or incomplete.need - position > 2 * _READ_SIZE
            if batch:
                yield batch
            if not large:
                break
            buffer = await _whole_reply(stream, buffer)


def replies(connection: AbstractConnection) -> AsyncIterator[list[Any]]:
    """`read_replies` on ``connection``'s stream (redis-py's parser where it has none)."""
    stream = getattr(connection, "_reader", None)
    if not isinstance(stream, asyncio.StreamReader):
        return _fallback(connection)
    return read_replies(stream)


async def _fallback(connection: AbstractConnection) -> AsyncIterator[list[Any]]:
    read = connection.read_response
    while True:
        try:
            reply = await read()
        except ResponseError as error:
            reply = error
        yield [reply]
