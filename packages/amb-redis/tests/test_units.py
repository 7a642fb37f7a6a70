"""The pieces that need no server: name mapping, reply parsing, connection settings, scripts."""

from __future__ import annotations

import asyncio
import contextlib
import random
from fnmatch import fnmatchcase
from importlib.resources import files
from typing import Any

import pytest
from redis.asyncio.connection import SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from amb_core.adapter import topic_matches
from amb_redis import RedisBroker
from amb_redis import _resp_reader as _replies
from amb_redis._names import Names, redis_glob
from amb_redis._resp import command
from amb_redis._resp_reader import _Incomplete, parse, read_replies
from amb_redis._scripts import Scripts, lua

SEGMENTS = ["a", "b", "c", "_amb", "x-y"]


def random_pattern(rng: random.Random) -> str:
    return ".".join(rng.choice([*SEGMENTS, "*", "#"]) for _ in range(rng.randint(1, 4)))


def random_topic(rng: random.Random) -> str:
    return ".".join(rng.choice(SEGMENTS) for _ in range(rng.randint(1, 5)))


@pytest.mark.parametrize(
    ("pattern", "glob"),
    [
        ("a.b", "a.b"),
        ("a.*", "a.*"),
        ("a.#", "a*"),
        ("#.a", "*a"),
        ("#", "*"),
        ("a.#.b", "a*.b"),
        ("*.*", "*.*"),
        ("a.#.#.b", "a*.b"),
    ],
)
def test_patterns_become_globs(pattern: str, glob: str) -> None:
    assert redis_glob(pattern) == glob


def test_a_glob_matches_every_topic_of_its_pattern() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        pattern, topic = random_pattern(rng), random_topic(rng)
        if topic_matches(pattern, topic):
            assert fnmatchcase(topic, redis_glob(pattern)), (pattern, topic)


def test_names_keep_amb_keys_apart_from_topics() -> None:
    names = Names("amb:")
    assert names.stream("a.*") == "amb:stream:a.*"
    assert names.dead_letters("a.*", "workers") == "amb:dlq:a.*:workers"
    assert names.wake("a.#") == "amb:wake:a.#"
    with pytest.raises(ValueError):
        Names("bad prefix")


def test_replies_parse_in_one_pass() -> None:
    buffer = (
        b"*3\r\n$7\r\nmessage\r\n$3\r\na.b\r\n$5\r\nhello\r\n"
        b":42\r\n+OK\r\n$-1\r\n*-1\r\n-NOGROUP no such group\r\n"
        b"*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$7\r\nmessage\r\n$0\r\n\r\n:1\r\n"
    )
    position, replies = 0, []
    while position < len(buffer):
        reply, position = parse(buffer, position)
        replies.append(reply)
    assert replies[:5] == [[b"message", b"a.b", b"hello"], 42, b"OK", None, None]
    assert isinstance(replies[5], ResponseError) and str(replies[5]).startswith("NOGROUP")
    assert replies[6] == [[b"1-0", [b"message", b""]], 1]


def test_an_incomplete_reply_says_how_much_it_needs() -> None:
    whole = b"*2\r\n$5\r\nhello\r\n$10\r\n0123456789\r\n"
    for cut in range(1, len(whole)):
        with pytest.raises(_Incomplete) as incomplete:
            parse(whole[:cut], 0)
        assert incomplete.value.need <= len(whole)
    assert parse(whole, 0) == ([b"hello", b"0123456789"], len(whole))


def test_commands_are_packed_as_resp() -> None:
    assert command(b"SET", b"k", b"") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"


def test_tls_and_passwords_pass_through_to_redis_py() -> None:
    broker = RedisBroker(
        "rediss://user:s3cret@example.invalid:6380/2?ssl_cert_reqs=none", socket_connect_timeout=1
    )
    assert issubclass(broker._connector.connection_class, SSLConnection)
    kwargs = broker._connector.kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"], kwargs["port"]) == (
        "user",
        "s3cret",
        2,
        6380,
    )
    assert kwargs["ssl_cert_reqs"] == "none"
    assert "s3cret" not in repr(broker)


def test_an_option_redis_py_does_not_take_fails_at_once() -> None:
    with pytest.raises(TypeError):
        RedisBroker("redis://localhost", no_such_option=1)


def test_a_unix_socket_url_is_accepted() -> None:
    broker = RedisBroker("unix:///run/redis/redis.sock?db=3")
    assert broker._connector.kwargs["path"] == "/run/redis/redis.sock"
    assert broker._connector.kwargs["db"] == 3


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"prefetch": 0},
        {"claim_idle": 0},
        {"prefix": "a b"},
        {"outage_timeout": 0},
        {"connect_timeout": -1},
        {"max_message_size": 0},
        {"stream_maxlen": 0},
    ],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RedisBroker("redis://localhost", **options)  # type: ignore[arg-type]


class CountingReader(asyncio.StreamReader):
    """A StreamReader that counts how often the reply reader asks it for data."""

    def __init__(self, data: bytes) -> None:
        super().__init__(limit=1 << 16)
        self.feed_data(data)
        self.feed_eof()
        self.reads = 0

    async def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return await super().read(n)

    async def readexactly(self, n: int) -> bytes:
        self.reads += 1
        return await super().readexactly(n)


def _resp(value: Any) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, ResponseError):
        return b"-%s\r\n" % str(value).encode()
    return b"*%d\r\n" % len(value) + b"".join(_resp(item) for item in value)


async def _read_all(reader: asyncio.StreamReader) -> list[Any]:
    got: list[Any] = []
    with contextlib.suppress(RedisConnectionError):  # the end of the data
        async for batch in read_replies(reader):
            got.extend(batch)
    return got


@pytest.mark.anyio
async def test_a_large_reply_is_read_in_a_few_reads() -> None:
    """Issue 11, problem 9: a 40 MB reply was read 64 KiB at a time, the buffer copied whole
    each time (11.5 s). Now the rest of a long bulk string is read at once."""
    blob = bytes(range(256)) * (40_000_000 // 256)
    reader = CountingReader(_resp(blob) + b":1\r\n")
    assert await _read_all(reader) == [blob, 1]
    assert reader.reads <= 4, reader.reads


@pytest.mark.anyio
async def test_a_reply_of_many_large_entries_is_read_in_time_linear_in_its_size() -> None:
    entries = [[b"%d-0" % n, [b"message", bytes([n]) * 1_000_000]] for n in range(30)]
    reply = [[b"amb:stream:x", entries]]  # what XREADGROUP answers
    reader = CountingReader(_resp(reply) + b"+OK\r\n")
    assert await _read_all(reader) == [reply, b"OK"]
    assert reader.reads <= 2 * len(entries) + 4, reader.reads


@pytest.mark.anyio
@pytest.mark.parametrize("read_size", [1, 3, 16, 1 << 16])
async def test_replies_split_anywhere_are_read_whole(monkeypatch: pytest.MonkeyPatch, read_size: int) -> None:
    monkeypatch.setattr(_replies, "_READ_SIZE", read_size)
    rng = random.Random(read_size)

    def value(depth: int) -> Any:
        kind = rng.choice(["bulk", "int", "nil", "error", "array"] if depth < 3 else ["bulk", "int"])
        if kind == "bulk":
            return bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 5, 40, 300])))
        if kind == "int":
            return rng.randint(-5, 10**6)
        if kind == "nil":
            return None
        if kind == "error":
            return ResponseError("ERR something")
        return [value(depth + 1) for _ in range(rng.randint(0, 4))]

    replies = [value(0) for _ in range(200)]
    got = await _read_all(CountingReader(b"".join(_resp(reply) for reply in replies)))

    def plain(item: Any) -> Any:
        if isinstance(item, ResponseError):
            return ("error", str(item))
        if isinstance(item, list):
            return [plain(x) for x in item]
        return item

    assert [plain(item) for item in got] == [plain(item) for item in replies]


def test_the_scripts_are_the_lua_files_shipped_in_the_package() -> None:
    shipped = sorted(
        path.name for path in (files("amb_redis") / "lua").iterdir() if path.name.endswith(".lua")
    )
    assert "common.lua" in shipped
    scripts = Scripts("amb-test:", maxlen=7, dead_letter_maxlen=9)
    assert len(scripts.all) == len(shipped) - 1  # common.lua goes in front of each of the others
    sources = {script.source.decode() for script in scripts.all}
    assert len(sources) == len(scripts.all)
    for name in shipped:
        assert all(lua(name.removesuffix(".lua")) in source for source in sources) == (name == "common.lua")
    for source in sources:
        assert source.startswith(
            "local PREFIX = 'amb-test:'\nlocal MAXLEN = 7\nlocal DEAD_LETTER_MAXLEN = 9\n"
        )
        assert "{{" not in source and "{prefix}" not in source  # no Python formatting left
