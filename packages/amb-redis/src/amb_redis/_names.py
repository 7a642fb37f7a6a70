"""How AMB names map onto Redis channels and keys (documented in the README's wire mapping)."""

from __future__ import annotations

import re

from amb_core.adapter import is_pattern

_PREFIX = re.compile(r"[A-Za-z0-9_.-]*:?")


def check_prefix(prefix: str) -> str:
    if _PREFIX.fullmatch(prefix) is None:
        raise ValueError(
            f"prefix must be letters, digits, '_', '-', '.' and an optional trailing ':', not {prefix!r}"
        )
    return prefix


def redis_glob(pattern: str) -> str:
    """A Redis glob matching at least every topic of the AMQP-style ``pattern``.

    Redis's ``*`` also matches dots, so it stands for both ``*`` and ``#``; a ``#`` swallows one
    neighbouring dot because it may match zero segments (``a.#`` matches ``a``). The glob is
    wider than the pattern (``a.*`` also matches ``a.b.c``): subscribers filter exactly with
    `Subscription.matches`. Topic characters are never glob metacharacters, so nothing needs
    escaping.
    """
    glob = pattern.replace(".#", "*").replace("#.", "*").replace("#", "*")
    while "**" in glob:
        glob = glob.replace("**", "*")
    return glob


class Names:
    """Key and channel names under one prefix (default ``amb:``).

    Ungrouped subscriptions use the topic itself as the Pub/Sub channel, so plain Redis clients
    can read and write AMB topics. Everything else AMB keeps in Redis contains a ``:``, which no
    topic can, so it never collides with a topic.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        #: ZSET pattern -> the latest deadline of its groups: where publishers look for groups.
        self.groups = f"{prefix}groups"
        #: HASH topic -> space-separated patterns with groups: the publish script's route cache.
        self.routes = f"{prefix}routes"
        #: HASH "<pattern> <group>" -> time (s) after which the group is removed: group_expiry
        #: after its last member left (or, for members that died, after they last vouched).
        self.deadlines = f"{prefix}deadlines"
        #: SET of the patterns in `groups` that hold wildcards: all a route lookup matches against.
        self.wildcards = f"{prefix}wildcards"

    def stream(self, pattern: str) -> str:
        """The stream every group on ``pattern`` reads (one Redis consumer group per AMB group)."""
        return f"{self.prefix}stream:{pattern}"

    def dead_letters(self, pattern: str, group: str) -> str:
        """Where entries of ``group`` on ``pattern`` go after ``max_attempts`` failed deliveries."""
        return f"{self.prefix}dlq:{pattern}:{group}"

    def wake(self, pattern: str) -> str:
        """The channel that wakes idle readers of ``pattern``'s stream."""
        return f"{self.prefix}wake:{pattern}"

    def receiver(self, subscription_id: str, pattern: str) -> str:
        """A channel an ungrouped subscription listens to and nobody publishes on: the counting
        publish script (`gather`) counts the live ungrouped subscriptions of a topic by these
        (a bus's Pub/Sub connection subscribes once to a channel several of its subscriptions
        share, so PUBLISH's own count cannot tell them apart)."""
        return f"{self.prefix}sub:{subscription_id}:{pattern}"

    def idle(self, pattern: str) -> str:
        """Set by a reader that found the stream empty: the next publish then publishes a wake."""
        return f"{self.prefix}idle:{pattern}"


__all__ = ["Names", "check_prefix", "is_pattern", "redis_glob"]
