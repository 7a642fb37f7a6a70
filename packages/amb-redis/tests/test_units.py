"""The pieces that need no server: name mapping, reply parsing, connection settings."""

from __future__ import annotations

import random
from fnmatch import fnmatchcase

import pytest
from redis.asyncio.connection import SSLConnection
from redis.exceptions import ResponseError

from amb_core.topics import topic_matches
from amb_redis import RedisBroker
from amb_redis._names import Names, redis_glob
from amb_redis._replies import _Incomplete, parse
from amb_redis._resp import command

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
    assert issubclass(broker._connection_class, SSLConnection)
    kwargs = broker._connection_kwargs
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
    assert broker._connection_kwargs["path"] == "/run/redis/redis.sock"
    assert broker._connection_kwargs["db"] == 3


@pytest.mark.parametrize(
    "options", [{"max_attempts": 0}, {"prefetch": 0}, {"claim_idle": 0}, {"prefix": "a b"}]
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RedisBroker("redis://localhost", **options)  # type: ignore[arg-type]
