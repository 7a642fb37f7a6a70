"""How AMB names map onto Kafka names: topic regexes, consumer group ids, dead-letter topics."""

from __future__ import annotations

import hashlib
import re

from amb_core.topics import MAX_TOPIC_LENGTH, is_pattern, pattern_regex

#: Topics the bus and this adapter create for themselves. Wildcards never match them, so a
#: ``#`` subscriber does not see other buses' replies or re-consume dead letters.
RESERVED_PREFIX = "_amb."
INBOX_PREFIX = "_amb.inbox."
DLQ_PREFIX = "_amb.dlq."


def topic_regex(pattern: str) -> re.Pattern[str]:
    """A regex that matches (with ``match``) exactly the Kafka topics of ``pattern``.

    aiokafka applies a subscription pattern with ``re.match``, hence the explicit end anchor.
    """
    regex = pattern_regex(pattern)
    if pattern.split(".", 1)[0] in ("*", "#"):
        regex = f"(?!{re.escape(RESERVED_PREFIX)})(?:{regex})"
    return re.compile(rf"(?:{regex})\Z")


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
