"""Encoding commands in the Redis protocol (RESP).

redis-py's own packer encodes and inspects every argument; the publish hot path packs two
byte strings behind a header computed once, so it builds the bytes itself.
"""

from __future__ import annotations


def bulk(value: bytes) -> bytes:
    """One argument of a command: ``$<length>\\r\\n<value>\\r\\n``."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*args: bytes) -> bytes:
    """A whole command, ready to write to the socket."""
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args])


def header(count: int, *first: bytes) -> bytes:
    """The start of a command of ``count`` arguments whose leading arguments are ``first``;
    append the remaining ones with `bulk`."""
    return b"*%d\r\n" % count + b"".join([bulk(arg) for arg in first])
