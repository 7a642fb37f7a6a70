from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Any

import pytest

from amb_core import InvalidPayloadError
from amb_core._payload import json_object


class Colour(str, enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


def test_the_copy_is_private_and_equal() -> None:
    payload: dict[str, Any] = {"a": [1, {"b": None}], "c": "é", "d": 1.5, "e": True}
    copy = json_object(payload)
    assert copy == payload
    payload["a"][1]["b"] = "changed after publish"
    assert copy["a"][1]["b"] is None


def test_values_become_what_json_gives_back() -> None:
    copy = json_object({"tuple": (1, 2), "enum": Colour.RED, "int": Size.BIG, "ordered": OrderedDict(x=1)})
    assert copy == {"tuple": [1, 2], "enum": "red", "int": 3, "ordered": {"x": 1}}
    assert type(copy["enum"]) is str and type(copy["int"]) is int and type(copy["ordered"]) is dict


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"x": object()}, "payload['x'] is a object"),
        ({"x": [float("nan")]}, "payload['x'][0] is nan"),
        ({"x": {1: 2}}, "key 1 of type int"),
        ({"x": b"bytes"}, "bytes"),
        ([1, 2], "must be a dict"),
    ],
)
def test_what_json_cannot_carry_is_refused_clearly(payload: Any, fragment: str) -> None:
    with pytest.raises(InvalidPayloadError) as raised:
        json_object(payload)
    assert fragment in str(raised.value)
    assert isinstance(raised.value, TypeError) and isinstance(raised.value, ValueError)
