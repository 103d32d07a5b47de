"""JSON schemas written outside the code (tenants' HTTP tools, flows, MCP tools), applied safely.

A schema may refer only inside itself (`#/…`): validation uses a `referencing` registry that
retrieves nothing, so no `$ref` reaches the network or a file. Regular expressions
(`pattern`, `patternProperties`) run in RE2, whose time is linear in the input, so a
pathological pattern cannot stall the process. `check` refuses at registration what could not
be applied: another draft's metaschema violations, remote references, references that loop
without reading the input, patterns RE2 cannot run, and schemas too deep or too large.
"""

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import re2
import referencing.exceptions
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import _WrappedReferencingError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from core.errors import InvalidRequest

MAX_DEPTH = 32
MAX_BYTES = 65_536
IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
IN_PLACE = ("not", "if", "then", "else")
REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
NO_RETRIEVAL: Registry[Any] = Registry()


class SchemaProblem(InvalidRequest):
    """Raised when a schema cannot be applied to inputs (a loop, an unresolvable reference)."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    return options


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """`pattern` compiled by RE2; raises re2.error for what RE2 cannot run (look-around,
    back-references)."""
    return re2.compile(pattern, _options())


def _search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


def _pattern(validator: Validator, pattern: str, instance: Any,
             schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Validator, patterns: dict[str, Any], instance: Any,
                        schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    known = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [key for key in instance
            if key not in known and not any(_search(p, key) for p in patterns)]


def _additional_properties(validator: Validator, additional: Any, instance: Any,
                           schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = ", ".join(repr(extra) for extra in sorted(extras))
        yield ValidationError(f"Additional properties are not allowed ({names} unexpected)")


@functools.lru_cache(maxsize=8)
def _safe_class(base: type[Validator]) -> type[Validator]:
    return jsonschema.validators.extend(base, {  # type: ignore[no-any-return]
        "pattern": _pattern, "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties})


def validator(schema: dict[str, Any]) -> Validator:
    """A validator of `schema` that retrieves nothing and runs patterns in RE2."""
    base = jsonschema.validators.validator_for(schema, default=Draft202012Validator)
    return _safe_class(base)(schema, registry=NO_RETRIEVAL)


def first_error(checker: Validator, instance: Any) -> ValidationError | None:
    """The most relevant error of `instance`, or None; SchemaProblem if the schema cannot be
    applied (a schema stored before `check` existed)."""
    try:
        return jsonschema.exceptions.best_match(checker.iter_errors(instance))
    except (_WrappedReferencingError, referencing.exceptions.Unresolvable) as exc:
        raise SchemaProblem(f"the input schema cannot be applied: {exc}") from exc
    except (RecursionError, re2.error) as exc:
        raise SchemaProblem("the input schema cannot be applied: it refers to itself "
                            "without end, or holds a pattern RE2 cannot run") from exc


# --- registration -----------------------------------------------------------------------------


def _nodes(schema: Any, field: str) -> list[dict[str, Any]]:
    """Every object in the schema; InvalidRequest when it is nested too deep (read without
    recursion, so a very deep schema is refused, not a crash)."""
    found: list[dict[str, Any]] = []
    stack: list[tuple[Any, int]] = [(schema, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list) and depth > MAX_DEPTH:
            raise InvalidRequest(f"{field}: nested deeper than {MAX_DEPTH} levels", field=field)
        if isinstance(value, dict):
            found.append(value)
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)
    return found


def _patterns(node: dict[str, Any]) -> list[str]:
    found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
    if isinstance(node.get("patternProperties"), dict):
        found += list(node["patternProperties"])
    return found


def _check_node(node: dict[str, Any], root: bool, field: str) -> None:
    if not root and isinstance(node.get("$id"), str):
        raise InvalidRequest(f"{field}: only the schema itself may have an $id", field=field)
    for key in REF_KEYS:
        ref = node.get(key)
        if isinstance(ref, str) and not ref.startswith("#"):
            raise InvalidRequest(f"{field}: {key} '{ref[:200]}' points outside the schema; only "
                                 "references inside it ('#/…') are allowed", field=field)
    for pattern in _patterns(node):
        try:
            compile_pattern(pattern)
        except re2.error as exc:
            raise InvalidRequest(f"{field}: the pattern '{pattern[:200]}' cannot be used "
                                 f"(RE2 syntax, no look-around or back-references): "
                                 f"{_reason(exc)}", field=field) from exc


def _reason(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else exc
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


def _in_place(node: dict[str, Any], lookup: Callable[[str], Any],
              field: str) -> Iterator[Any]:
    """The subschemas applied to the same instance as `node` (no step into the input)."""
    for key in IN_PLACE_LISTS:
        if isinstance(node.get(key), list):
            yield from node[key]
    for key in IN_PLACE:
        yield node.get(key)
    if isinstance(node.get("dependentSchemas"), dict):
        yield from node["dependentSchemas"].values()
    for key in REF_KEYS:
        if isinstance(ref := node.get(key), str):
            try:
                yield lookup(ref)
            except referencing.exceptions.Unresolvable as exc:
                raise InvalidRequest(f"{field}: {key} '{ref[:200]}' does not point to a part "
                                     "of the schema", field=field) from exc


def _check_loops(schema: dict[str, Any], nodes: list[dict[str, Any]], field: str) -> None:
    """Refuse references that come back to where they started without reading the input."""
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    resolver = NO_RETRIEVAL.resolver_with_root(resource)
    done: set[int] = set()

    def visit(node: Any, path: tuple[int, ...]) -> None:
        if not isinstance(node, dict) or id(node) in done:
            return
        if id(node) in path:
            raise InvalidRequest(f"{field}: a $ref loops back to itself without reading "
                                 "any input", field=field)
        for child in _in_place(node, lambda ref: resolver.lookup(ref).contents, field):
            visit(child, (*path, id(node)))
        done.add(id(node))

    for node in nodes:
        visit(node, ())


def check(schema: Any, field: str = "input_schema") -> None:
    """Raise InvalidRequest naming what makes `schema` unusable as an input schema."""
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{field}: a JSON schema is an object", field=field)
    nodes = _nodes(schema, field)
    if len(json.dumps(schema, separators=(",", ":"))) > MAX_BYTES:
        raise InvalidRequest(f"{field}: larger than {MAX_BYTES} bytes", field=field)
    for node in nodes:
        _check_node(node, node is schema, field)
    if any("patternProperties" in n for n in nodes) and any(
            "unevaluatedProperties" in n for n in nodes):
        raise InvalidRequest(f"{field}: unevaluatedProperties together with patternProperties "
                             "is not supported", field=field)
    base = jsonschema.validators.validator_for(schema, default=Draft202012Validator)
    try:
        base.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"{field}: not a JSON schema: {exc.message}", field=field) from exc
    _check_loops(schema, nodes, field)
