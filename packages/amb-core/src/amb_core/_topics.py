"""Topic and pattern rules, shared by the bus and every adapter.

A topic is dot-separated segments of ``[A-Za-z0-9_-]``, at most 249 characters: a name that is
legal unchanged as a Kafka topic, an AMQP routing key and a Redis channel. A pattern may also use
AMQP wildcards: ``*`` is exactly one segment, ``#`` is zero or more.

Topics under ``_amb.`` are the bus's own (reply inboxes): a pattern that starts with a wildcard
never matches them, so a ``#`` subscriber does not see other buses' replies.
"""

from __future__ import annotations

import re
from functools import lru_cache

from amb_core._errors import InvalidTopicError

MAX_TOPIC_LENGTH = 249
RESERVED_PREFIX = "_amb."
#: Each bus's private reply topic is ``INBOX_PREFIX + <id>``.
INBOX_PREFIX = f"{RESERVED_PREFIX}inbox."
_TOPIC = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_RULES = "dot-separated segments of [A-Za-z0-9_-], at most 249 characters"


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic, else raise `InvalidTopicError`."""
    if not isinstance(topic, str):
        raise InvalidTopicError(f"topic must be a str, not {type(topic).__name__}")
    if len(topic) > MAX_TOPIC_LENGTH or _TOPIC.fullmatch(topic) is None:
        raise InvalidTopicError(f"invalid topic {topic!r}: expected {_RULES}")
    return topic


def is_pattern(pattern: str) -> bool:
    """Whether ``pattern`` uses a wildcard segment."""
    return any(segment in ("*", "#") for segment in pattern.split("."))


def validate_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid topic or wildcard pattern, else raise `InvalidTopicError`."""
    if not isinstance(pattern, str):
        raise InvalidTopicError(f"pattern must be a str, not {type(pattern).__name__}")
    if (
        not pattern
        or len(pattern) > MAX_TOPIC_LENGTH
        or not all(segment in ("*", "#") or _SEGMENT.fullmatch(segment) for segment in pattern.split("."))
    ):
        raise InvalidTopicError(
            f"invalid pattern {pattern!r}: expected {_RULES}, where a whole segment may be * or #"
        )
    return pattern


def validate_group(group: object) -> str:
    """Return ``group`` if it is a valid group name (one topic segment), else raise."""
    if not isinstance(group, str) or _SEGMENT.fullmatch(group) is None:
        raise InvalidTopicError(f"invalid group {group!r}: expected a non-empty name of [A-Za-z0-9_-]")
    return group


@lru_cache(maxsize=4096)
def pattern_regex(pattern: str) -> str:
    """A regular expression (Python and Java syntax) that fully matches the topics of ``pattern``."""
    segments: list[str] = []
    for segment in validate_pattern(pattern).split("."):
        if not (segment == "#" and segments and segments[-1] == "#"):
            segments.append(segment)  # "#.#" means the same as "#"
    # A leading wildcard must not reach into the bus's own topics.
    parts: list[str] = [r"(?!_amb\.)"] if segments[0] in ("*", "#") else []
    if segments == ["#"]:
        return parts[0] + r"[^.]+(?:\.[^.]+)*"
    for index, segment in enumerate(segments):
        if segment == "#":
            parts.append(r"(?:[^.]+\.)*" if index == 0 else r"(?:\.[^.]+)*")
            continue
        if index > 0 and not (index == 1 and segments[0] == "#"):
            parts.append(r"\.")
        parts.append(r"[^.]+" if segment == "*" else re.escape(segment))
    return "".join(parts)


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern_regex`, compiled."""
    return re.compile(pattern_regex(pattern))


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` is one of the topics ``pattern`` stands for."""
    return compile_pattern(pattern).fullmatch(topic) is not None
