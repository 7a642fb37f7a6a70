"""The Lua scripts that keep publishing and group bookkeeping atomic on the server.

Publishing runs a script so that one round trip reaches both kinds of subscription, and so
that it is atomic with group registration: once a group's registration has returned, every
later publish sees it. Scripts build their keys from the prefix, so they need a standalone
Redis (or a single shard), not Redis Cluster.

The scripts are plain Lua files shipped with the package (``amb_redis/lua/``): ``common.lua``
holds the helpers every script uses, each other file one script, its arguments described at its
top. `Scripts` puts this adapter's settings first, as Lua locals, then ``common.lua``, then the
script.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files

from amb_redis._resp import bulk, command


@cache
def lua(name: str) -> str:
    """The Lua source of ``amb_redis/lua/<name>.lua``, read once per process."""
    return (files("amb_redis") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


class Script:
    """A Lua script called by SHA (EVALSHA); `as_eval` turns a call into EVAL when the
    server no longer knows it (a SCRIPT FLUSH)."""

    __slots__ = ("_eval", "_evalsha", "sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()
        self._evalsha = bulk(b"EVALSHA") + bulk(self.sha) + bulk(b"0")
        self._eval = bulk(b"EVAL") + bulk(self.source) + bulk(b"0")

    def header(self, count: int) -> bytes:
        """The start of a call with ``count`` arguments (append them with `bulk`)."""
        return b"*%d\r\n" % (count + 3) + self._evalsha

    def call(self, *args: bytes) -> bytes:
        return self.header(len(args)) + b"".join([bulk(arg) for arg in args])

    def load(self) -> bytes:
        return command(b"SCRIPT", b"LOAD", self.source)

    def as_eval(self, packed: bytes) -> bytes | None:
        """``packed`` as an EVAL of this script, or None if it is not a call of this script."""
        start = packed.find(b"\r\n") + 2
        if packed[start : start + len(self._evalsha)] != self._evalsha:
            return None
        return packed[:start] + self._eval + packed[start + len(self._evalsha) :]


class Scripts:
    """The scripts for one key prefix and its limits."""

    def __init__(
        self, prefix: str, *, maxlen: int, dead_letter_maxlen: int, max_routes: int = 10_000
    ) -> None:
        # The prefix is checked by `amb_redis._names.check_prefix`: only characters that need
        # no escaping in a Lua string.
        self._settings = (
            f"local PREFIX = '{prefix}'\n"
            f"local MAXLEN = {int(maxlen)}\n"
            f"local DEAD_LETTER_MAXLEN = {int(dead_letter_maxlen)}\n"
            f"local MAX_ROUTES = {int(max_routes)}\n"
        )
        self.publish = self.build(lua("publish"))
        self.counted = self.build(lua("counted"))
        self.trim = self.build(lua("trim"))
        self.ensure = self.build(lua("ensure"))
        self.retry = self.build(lua("retry"))
        self.done = self.build(lua("done"))
        self.dead_letter = self.build(lua("dead_letter"))
        self.claim = self.build(lua("claim"))
        self.recover = self.build(lua("recover"))
        self.release = self.build(lua("release"))
        self.sweep = self.build(lua("sweep"))
        self.list = self.build(lua("list"))
        self.purge = self.build(lua("purge"))
        self.delete = self.build(lua("delete"))
        self.all = (
            self.publish,
            self.counted,
            self.trim,
            self.ensure,
            self.retry,
            self.done,
            self.dead_letter,
            self.claim,
            self.recover,
            self.release,
            self.sweep,
            self.list,
            self.purge,
            self.delete,
        )

    def build(self, body: str) -> Script:
        """A script running ``body`` (Lua) after the settings and ``common.lua``."""
        return Script(self._settings + lua("common") + body)
