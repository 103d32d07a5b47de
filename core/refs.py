"""Step references: `{"$ref": "steps.0.output.results"}` inside a step's inputs.

A reference names an earlier step's output, or a part of it (dict keys and list indexes after
`output`); it is replaced by that value when the step starts, read from the ledger.
"""

from collections.abc import Callable
from typing import Any

REF = "$ref"
EXAMPLE = "steps.0.output.results"


class RefError(ValueError):
    """Raised when a reference is malformed or names nothing in the ledger."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def has_refs(value: Any) -> bool:
    """Whether `value` holds a reference anywhere."""
    if isinstance(value, dict):
        return REF in value or any(has_refs(v) for v in value.values())
    if isinstance(value, list):
        return any(has_refs(v) for v in value)
    return False


def shift(value: Any, first: int, by: int) -> Any:
    """`value` with every well-formed reference to step `first` or later renumbered by `by`
    (steps were inserted before them); anything else as it is."""
    if isinstance(value, dict):
        path = value.get(REF)
        parts = path.split(".") if isinstance(path, str) and len(value) == 1 else []
        if len(parts) >= 3 and parts[0] == "steps" and parts[1].isdigit() \
                and int(parts[1]) >= first:
            return {REF: ".".join([parts[0], str(int(parts[1]) + by), *parts[2:]])}
        return {key: shift(item, first, by) for key, item in value.items()}
    if isinstance(value, list):
        return [shift(item, first, by) for item in value]
    return value


def resolve(value: Any, output_of: Callable[[int], Any], field: str = "inputs") -> Any:
    """`value` with every reference replaced by what it names.

    `output_of(n)` reads step n's output, raising LookupError (with the reason) when it cannot.
    """
    if isinstance(value, dict):
        if REF in value:
            if len(value) != 1:
                raise RefError(field, f"an object with '{REF}' may hold nothing else")
            return _lookup(value[REF], output_of, field)
        return {key: resolve(item, output_of, f"{field}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, output_of, f"{field}.{n}") for n, item in enumerate(value)]
    return value


def _lookup(path: Any, output_of: Callable[[int], Any], field: str) -> Any:
    parts = path.split(".") if isinstance(path, str) else []
    if len(parts) < 3 or parts[0] != "steps" or not parts[1].isdigit() or parts[2] != "output":
        raise RefError(field, f"'{REF}' must be a string such as '{EXAMPLE}', not {path!r}")
    try:
        value = output_of(int(parts[1]))
    except LookupError as exc:
        raise RefError(field, f"'{path}' does not resolve: {exc.args[0]}") from exc
    for part in parts[3:]:
        value = _child(value, part, path, field)
    return value


def _child(value: Any, part: str, path: str, field: str) -> Any:
    if isinstance(value, dict) and part in value:
        return value[part]
    if isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(
            value):
        return value[int(part)]
    raise RefError(field, f"'{path}' does not resolve: no '{part}' in {_shape(value)}")


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:20]}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__}"
