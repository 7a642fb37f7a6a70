from __future__ import annotations

import re

import pytest

from amb_core import InvalidTopicError
from amb_core.adapter import pattern_regex, topic_matches, validate_group, validate_pattern, validate_topic

MATCHES = [
    ("a.b", "a.b", True),
    ("a.b", "a.c", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y", False),
    ("#.#", "a.b", True),
    ("a.#.#.b", "a.b", True),
    ("*.#", "a", True),
    ("#.*", "a.b", True),
    ("a-b_c.d", "a-b_c.d", True),
    ("a.b", "a-b", False),
    # The bus's own topics are out of reach of a leading wildcard, not of an explicit pattern.
    ("#", "_amb.inbox.x", False),
    ("*.*.*", "_amb.inbox.x", False),
    ("_amb.#", "_amb.inbox.x", True),
    ("#", "_amb", True),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCHES)
def test_amqp_wildcard_rules(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected
    assert (re.fullmatch(pattern_regex(pattern), topic) is not None) is expected


@pytest.mark.parametrize("topic", ["a", "agent.thoughts", "A-1.b_2", "x" * 249, "a." * 124 + "b"])
def test_valid_topics(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize("topic", ["", "a..b", ".a", "a.", "a b", "a/b", "a.*", "#", "é", "x" * 250, 5, None])
def test_invalid_topics(topic: object) -> None:
    with pytest.raises(InvalidTopicError, match="topic"):
        validate_topic(topic)


@pytest.mark.parametrize("pattern", ["", "a..b", "a.**", "a*", "a.#b", "*a", None])
def test_invalid_patterns(pattern: object) -> None:
    with pytest.raises(InvalidTopicError):
        validate_pattern(pattern)


def test_groups_are_one_segment() -> None:
    assert validate_group("workers-1") == "workers-1"
    for bad in ("", "a.b", "a b", None):
        with pytest.raises(InvalidTopicError):
            validate_group(bad)
