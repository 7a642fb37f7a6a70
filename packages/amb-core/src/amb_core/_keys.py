"""Ordering keys: ``publish(..., key="order-42")``.

Messages with the same key reach each subscription in publish order, on every adapter, and a
group hands them to its members in that order (docs/semantics.md, "Keys"). A key is any
non-empty string of at most `MAX_KEY_LENGTH` characters (a conversation, a customer, an agent:
whatever must not be reordered); it travels in the envelope (``message.key``) and, where the
broker has one, as the broker's own key (the Kafka record key).
"""

from __future__ import annotations

MAX_KEY_LENGTH = 256


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid ordering key; raise `TypeError` or `ValueError`."""
    if type(key) is not str:
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    if not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"key must be 1 to {MAX_KEY_LENGTH} characters, not {len(key)}")
    try:
        key.encode()
    except UnicodeEncodeError:
        raise ValueError(f"key {key!r} is not valid Unicode text (it holds a lone surrogate)") from None
    return key
