"""How AMB names map onto Kafka names: topic regexes, consumer group ids, dead-letter topics."""

from __future__ import annotations

import hashlib
import re

from amb_core.adapter import MAX_TOPIC_LENGTH, RESERVED_PREFIX, is_pattern, pattern_regex

#: Dead letters live under the bus's reserved prefix, so wildcards never re-consume them.
DLQ_PREFIX = f"{RESERVED_PREFIX}dlq."


def topic_regex(pattern: str) -> re.Pattern[str]:
    """A regex that matches (with ``match``) exactly the Kafka topics of ``pattern``.

    aiokafka applies a subscription pattern with ``re.match``, hence the explicit end anchor.
    `pattern_regex` already keeps leading wildcards out of the reserved ``_amb.`` topics.
    """
    return re.compile(rf"(?:{pattern_regex(pattern)})\Z")


def wildcard(pattern: str) -> bool:
    """Whether ``pattern`` stands for more than one topic."""
    return is_pattern(pattern)


def group_id(group: str, pattern: str) -> str:
    """The Kafka consumer group of an AMB group.

    AMB groups are told apart by pattern (``team`` on ``a.b`` and ``team`` on ``a.*`` each get
    their own copy), so the pattern is part of the id. Group names are one segment (no dot),
    which keeps ``<group>.<pattern>`` unambiguous.
    """
    return f"{group}.{pattern}"


def dead_letter_topic(topic: str) -> str:
    """``_amb.dlq.<topic>``, shortened with a hash when that would exceed Kafka's limit."""
    name = DLQ_PREFIX + topic
    if len(name) <= MAX_TOPIC_LENGTH:
        return name
    digest = hashlib.sha256(topic.encode()).hexdigest()[:16]
    return f"{name[: MAX_TOPIC_LENGTH - len(digest) - 1]}.{digest}"
