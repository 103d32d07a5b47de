"""A step's output made storable: non-finite numbers become null, NUL and lone surrogates
U+FFFD, the rest is refused."""

import datetime
import json
import math
from typing import Any

import pytest

from core.storable import NotStorable, storable


@pytest.mark.parametrize(("value", "expected", "replaced"), [
    ({"a": 1, "b": [1.5, "x", None, True]}, {"a": 1, "b": [1.5, "x", None, True]}, []),
    (math.nan, None, ["$"]),
    ({"x": math.nan, "y": [1.0, math.inf], "z": {"w": -math.inf}},
     {"x": None, "y": [1.0, None], "z": {"w": None}}, ["$.x", "$.y[1]", "$.z.w"]),
    ((1, math.nan), [1, None], ["$[1]"]),
    ({1: "int keys are written as strings by json"}, {1: "int keys are written as strings by json"},
     []),
], ids=["plain", "bare-nan", "nested", "tuple", "int-key"])
def test_non_finite_numbers_become_null_and_their_paths_are_named(
        value: Any, expected: Any, replaced: list[str]) -> None:
    cleaned, paths = storable(value)
    assert cleaned == expected and paths.numbers == replaced and not paths.text
    json.dumps(cleaned, allow_nan=False)  # strict JSON now


@pytest.mark.parametrize(("value", "expected", "replaced"), [
    ({"out": "a\x00b"}, {"out": "a\ufffdb"}, ["$.out"]),
    (["ok", "\ud800x\udfff"], ["ok", "\ufffdx\ufffd"], ["$[1]"]),
    ({"k\x00": {"v": "\x00"}}, {"k\ufffd": {"v": "\ufffd"}}, ["$.k\ufffd", "$.k\ufffd.v"]),
], ids=["nul", "lone-surrogates", "nul-key"])
def test_text_postgres_cannot_hold_is_replaced_and_its_paths_are_named(
        value: Any, expected: Any, replaced: list[str]) -> None:
    cleaned, paths = storable(value)
    assert cleaned == expected and paths.text == replaced and not paths.numbers
    # Postgres text and UTF-8 can hold it now, and so can the event naming the paths
    assert "\\u0000" not in json.dumps(cleaned) + json.dumps(paths.text)
    json.dumps([cleaned, paths.text], ensure_ascii=False).encode("utf-8")


def test_the_value_given_is_left_unchanged() -> None:
    value = {"x": [math.nan]}
    storable(value)
    assert math.isnan(value["x"][0])


@pytest.mark.parametrize(("value", "message"), [
    ({"when": datetime.date(2026, 1, 1)}, "$.when is a date"),
    ([b"bytes"], r"$[0] is a bytes"),
    ({"s": {1, 2}}, "$.s is a set"),
    ({(1, 2): "tuple key"}, "$ has a key JSON cannot hold: (1, 2)"),
], ids=["date", "bytes", "set", "tuple-key"])
def test_anything_else_json_cannot_hold_is_refused_by_its_path(value: Any, message: str) -> None:
    with pytest.raises(NotStorable) as raised:
        storable(value)
    assert str(raised.value).startswith(message)


def test_a_value_that_holds_itself_is_refused() -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(NotStorable, match="nested too deeply"):
        storable(looped)
