"""JSON-object checking: the one rule every adapter shares about what a payload may hold."""

from __future__ import annotations

import math
from typing import Any

from amb_core.errors import InvalidPayloadError

#: Values copied as they are: immutable, and already plain JSON.
_AS_IS = frozenset({str, int, bool, type(None)})


def json_object(value: object, what: str = "payload") -> dict[str, Any]:
    """Return a private copy of ``value`` made only of plain JSON types, or raise.

    The copy is what every subscriber receives, on every adapter: tuples become lists and enum
    members their plain values, exactly as a JSON round trip over a real broker would leave them,
    so code that works on the in-memory broker works unchanged on Redis.
    """
    if not isinstance(value, dict):
        raise InvalidPayloadError(f"{what} must be a dict (a JSON object), not {type(value).__name__}")
    return _copy_dict(value, what)


def _copy_dict(value: dict[Any, Any], path: str) -> dict[str, Any]:
    copy: dict[str, Any] = {}
    for key, item in value.items():
        if type(key) is not str:
            key = _plain_key(key, path)
        # Checked here too, not only in _copy: this runs for every value of every publish.
        copy[key] = item if type(item) in _AS_IS else _copy(item, path, key)
    return copy


def _plain_key(key: object, path: str) -> str:
    if not isinstance(key, str):
        raise InvalidPayloadError(
            f"{path} has a key {key!r} of type {type(key).__name__}; JSON object keys are str"
        )
    return key[:]  # a str subclass such as a StrEnum member, as plain str


def _copy(value: Any, path: str, key: object) -> Any:
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise InvalidPayloadError(f"{path}[{key!r}] is {value!r}, which JSON cannot represent")
    if kind is dict:
        return _copy_dict(value, f"{path}[{key!r}]")
    if kind is list or kind is tuple:
        inner = f"{path}[{key!r}]"
        return [_copy(item, inner, index) for index, item in enumerate(value)]
    return _copy_subclass(value, path, key)


def _copy_subclass(value: Any, path: str, key: object) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return value[:]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _copy(float(value), path, key)
    if isinstance(value, dict):
        return _copy_dict(value, f"{path}[{key!r}]")
    if isinstance(value, (list, tuple)):
        inner = f"{path}[{key!r}]"
        return [_copy(item, inner, index) for index, item in enumerate(value)]
    raise InvalidPayloadError(
        f"{path}[{key!r}] is a {type(value).__name__}, which is not JSON-serialisable; "
        "convert it to str, int, float, bool, None, list or dict first"
    )
