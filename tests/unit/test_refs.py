"""Step references resolved against earlier outputs."""

from typing import Any

import pytest

from core import refs
from core.refs import RefError, has_refs, resolve

OUTPUTS: dict[int, Any] = {0: {"results": [{"id": "a"}, {"id": "b"}], "n": 2}, 1: "text"}


def output_of(index: int) -> Any:
    if index not in OUTPUTS:
        raise LookupError(f"step {index} has no output")
    return OUTPUTS[index]


@pytest.mark.parametrize(("ref", "expected"), [
    ("steps.0.output", OUTPUTS[0]),
    ("steps.0.output.results", OUTPUTS[0]["results"]),
    ("steps.0.output.results.1.id", "b"),
    ("steps.0.output.results.-1", {"id": "b"}),
    ("steps.1.output", "text"),
], ids=["whole", "key", "nested-index", "negative-index", "scalar"])
def test_a_reference_takes_the_value_it_names(ref: str, expected: Any) -> None:
    assert resolve({"x": {"$ref": ref}}, output_of) == {"x": expected}


def test_references_are_replaced_anywhere_and_the_rest_is_kept() -> None:
    inputs = {"a": [1, {"$ref": "steps.0.output.n"}], "b": {"c": {"$ref": "steps.1.output"}},
              "d": "plain"}
    assert has_refs(inputs) and not has_refs({"a": [1, {"b": 2}]})
    assert resolve(inputs, output_of) == {"a": [1, 2], "b": {"c": "text"}, "d": "plain"}


@pytest.mark.parametrize(("inputs", "field", "message"), [
    ({"q": {"$ref": "steps.0.output.missing"}}, "inputs.q", "no 'missing' in an object"),
    ({"q": [{"$ref": "steps.0.output.results.5"}]}, "inputs.q.0", "no '5' in a list of 2"),
    ({"q": {"$ref": "steps.7.output"}}, "inputs.q", "step 7 has no output"),
    ({"q": {"$ref": "outputs.0"}}, "inputs.q", "must be a string such as"),
    ({"q": {"$ref": 3}}, "inputs.q", "must be a string such as"),
    ({"q": {"$ref": "steps.0.output", "x": 1}}, "inputs.q", "may hold nothing else"),
], ids=["missing-key", "index-out-of-range", "no-such-step", "bad-root", "not-a-string",
        "extra-keys"])
def test_a_reference_that_does_not_resolve_names_the_field(
        inputs: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(RefError) as raised:
        resolve(inputs, output_of)
    assert raised.value.field == field and message in str(raised.value)
    assert str(raised.value).startswith(f"{field}: ")


def test_references_after_an_inserted_step_move_with_their_steps() -> None:
    value = {"a": {"$ref": "steps.2.output.x"}, "b": [{"$ref": "steps.0.output"}],
             "c": {"$ref": "steps.3.output", "extra": 1}, "d": "steps.2.output"}
    assert refs.shift(value, 1, 1) == {
        "a": {"$ref": "steps.3.output.x"}, "b": [{"$ref": "steps.0.output"}],
        "c": {"$ref": "steps.3.output", "extra": 1}, "d": "steps.2.output"}
