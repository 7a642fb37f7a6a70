"""JSON-object checking: the one rule every adapter shares about what a payload may hold."""

from __future__ import annotations

import math
from typing import Any

from amb_core._errors import InvalidPayloadError

#: Values copied as they are: immutable, and already plain JSON.
_AS_IS = frozenset({str, int, bool, type(None)})

#: How deeply a payload (or metadata) may nest objects and arrays, the payload object itself
#: being level 1. Every consumer must be able to decode what was published: the JSON parser
#: behind `amb_core._wire.decode` refuses documents nested about 200 levels deep, and the
#: envelope adds one, so 100 leaves a wide margin and is far beyond what real payloads use.
MAX_DEPTH = 100


def json_object(value: object, what: str = "payload") -> dict[str, Any]:
    """Return a private copy of ``value`` made only of plain JSON types, or raise.

    The copy is what every subscriber receives, on every adapter: tuples become lists and enum
    members their plain values, exactly as a JSON round trip over a real broker would leave them,
    so code that works on the in-memory broker works unchanged on Redis. Nesting deeper than
    `MAX_DEPTH` (a self-referencing dict included) is refused.
    """
    if type(value) is dict:
        # A flat object of str keys and plain values, as most payloads are (a streamed chunk,
        # say), is copied whole: a third cheaper than item by item.
        for key, item in value.items():
            if type(item) not in _AS_IS or type(key) is not str:
                return _copy_dict(value, what, 1)
        return value.copy()
    if not isinstance(value, dict):
        raise InvalidPayloadError(f"{what} must be a dict (a JSON object), not {type(value).__name__}")
    return _copy_dict(value, what, 1)


def _copy_dict(value: dict[Any, Any], path: str, depth: int) -> dict[str, Any]:
    copy: dict[str, Any] = {}
    for key, item in value.items():
        if type(key) is not str:
            key = _plain_key(key, path)
        # Checked here too, not only in _copy: this runs for every value of every publish.
        copy[key] = item if type(item) in _AS_IS else _copy(item, path, key, depth)
    return copy


def _plain_key(key: object, path: str) -> str:
    if not isinstance(key, str):
        raise InvalidPayloadError(
            f"{path} has a key {key!r} of type {type(key).__name__}; JSON object keys are str"
        )
    return key[:]  # a str subclass such as a StrEnum member, as plain str


def _copy(value: Any, path: str, key: object, depth: int) -> Any:
    """``value``, found at ``path[key]`` in a container at ``depth``, as plain JSON."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise InvalidPayloadError(f"{path}[{key!r}] is {value!r}, which JSON cannot represent")
    if kind is dict:
        return _copy_dict(value, _inner(path, key, depth), depth + 1)
    if kind is list or kind is tuple:
        return _copy_list(value, _inner(path, key, depth), depth + 1)
    return _copy_subclass(value, path, key, depth)


def _inner(path: str, key: object, depth: int) -> str:
    """The path of a container nested at ``depth + 1``, once it is known to be allowed there."""
    if depth >= MAX_DEPTH:
        root = path.partition("[")[0]
        raise InvalidPayloadError(
            f"{root} nests objects and arrays more than {MAX_DEPTH} levels deep (at {path[:200]}...); "
            "every consumer must be able to decode it, so nesting is limited (amb_core.adapter.MAX_DEPTH)"
        )
    return f"{path}[{key!r}]"


def _copy_list(value: list[Any] | tuple[Any, ...], path: str, depth: int) -> list[Any]:
    return [
        item if type(item) in _AS_IS else _copy(item, path, index, depth) for index, item in enumerate(value)
    ]


def _copy_subclass(value: Any, path: str, key: object, depth: int) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return value[:]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _copy(float(value), path, key, depth)
    if isinstance(value, dict):
        return _copy_dict(value, _inner(path, key, depth), depth + 1)
    if isinstance(value, (list, tuple)):
        return _copy_list(value, _inner(path, key, depth), depth + 1)
    raise InvalidPayloadError(
        f"{path}[{key!r}] is a {type(value).__name__}, which is not JSON-serialisable; "
        "convert it to str, int, float, bool, None, list or dict first"
    )
