"""Schemas from outside the code: only local references, nothing retrieved, patterns in RE2."""

import http.server
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import jsonschemas
from core.errors import InvalidRequest
from tasks.engine.registry import Intent, JsonInputs


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    for _ in range(levels):
        schema = {"not": schema}
    return schema


REFUSED = [
    pytest.param({"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}},
                 "'http://127.0.0.1:9/x.json' points outside the schema", id="remote-ref"),
    pytest.param({"type": "object", "properties": {"a": {"$ref": "file:///etc/hostname"}}},
                 "'file:///etc/hostname' points outside the schema", id="file-ref"),
    pytest.param({"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}},
                 "points outside the schema", id="relative-ref"),
    pytest.param({"$ref": "#"}, "loops back to itself", id="self-loop"),
    pytest.param({"type": "object", "properties": {"a": {"$ref": "#/properties/a"}}},
                 "loops back to itself", id="property-loop"),
    pytest.param({"$defs": {"x": {"anyOf": [{"$ref": "#/$defs/y"}]}, "y": {"$ref": "#/$defs/x"}},
                  "type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}},
                 "loops back to itself", id="loop-through-anyOf"),
    pytest.param({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
                 "'#/$defs/missing' does not point to a part of the schema", id="dangling-ref"),
    pytest.param({"type": "object", "properties": {"a": {"type": "string",
                                                         "pattern": "(?=secret)"}}},
                 "the pattern '(?=secret)' cannot be used", id="look-ahead"),
    pytest.param({"type": "object", "patternProperties": {"(a)\\1": {}}},
                 "the pattern '(a)\\1' cannot be used", id="back-reference"),
    pytest.param({"type": "object", "properties": {"a": {"$id": "http://x/y", "type": "string"}}},
                 "only the schema itself may have an $id", id="nested-id"),
    pytest.param({"type": "object", "patternProperties": {"^a": {}},
                  "unevaluatedProperties": False}, "unevaluatedProperties", id="unevaluated"),
    pytest.param({"type": 5}, "not a JSON schema", id="metaschema"),
    pytest.param(_deep(40), "nested deeper than 32 levels", id="deep"),
    pytest.param(_deep(5000), "nested deeper than 32 levels", id="very-deep"),
    pytest.param({"type": "object", "description": "x" * 70_000}, "larger than", id="large"),
]


@pytest.mark.parametrize(("schema", "reason"), REFUSED)
def test_a_schema_that_cannot_be_applied_safely_is_refused_with_the_reason(
        schema: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        jsonschemas.check(schema)
    assert reason in str(refused.value) and refused.value.field == "input_schema"


ACCEPTED = [
    pytest.param({"type": "object",
                  "properties": {"child": {"$ref": "#"}, "n": {"type": "integer"}}},
                 {"child": {"child": {"n": "x"}}}, "'x' is not of type 'integer'",
                 id="recursion-through-a-property"),
    pytest.param({"type": "object", "$defs": {"name": {"type": "string", "maxLength": 3}},
                  "properties": {"a": {"$ref": "#/$defs/name"}}}, {"a": "long"},
                 "'long' is too long", id="local-definition"),
    pytest.param({"type": "object", "patternProperties": {"^x_": {"type": "integer"}},
                  "additionalProperties": False}, {"x_a": 1, "b": 2},
                 "Additional properties are not allowed ('b' unexpected)",
                 id="additional-beside-patterns"),
    pytest.param({"type": "object",
                  "properties": {"a": {"type": "string", "pattern": "^[a-z]+$"}}},
                 {"a": "AB"}, "'AB' does not match '^[a-z]+$'", id="pattern"),
]


@pytest.mark.parametrize(("schema", "instance", "message"), ACCEPTED)
def test_local_schemas_are_accepted_and_applied(schema: dict[str, Any], instance: Any,
                                                message: str) -> None:
    jsonschemas.check(schema)
    error = jsonschemas.first_error(jsonschemas.validator(schema), instance)
    assert error is not None and error.message == message


@pytest.fixture
def secret_server() -> Iterator[list[str]]:
    """A loopback server that records every request it gets."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            body = b'{"enum": ["INTERNAL-SECRET"]}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hits.append(f"http://127.0.0.1:{server.server_address[1]}/x.json")
    yield hits
    server.shutdown()


OPENED: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and isinstance(args[0], str) and "FILE-SECRET" in args[0]:
        OPENED.append(args[0])


sys.addaudithook(_audit)


def test_validation_never_fetches_a_reference_stored_before_the_check(
        secret_server: list[str], tmp_path: Path) -> None:
    # Given schemas (stored before registration checked them) referring to a loopback server
    # and to a local file
    url = secret_server.pop()
    secret = tmp_path / "FILE-SECRET.json"
    secret.write_text('{"enum": ["FILE-SECRET-ON-API-HOST"]}')
    OPENED.clear()
    for ref in (url, secret.as_uri()):
        intent = Intent("tool.x", "tools", "agent", JsonInputs, "x", lambda _: None,
                        json_schema={"type": "object", "properties": {"a": {"$ref": ref}}})
        # When inputs are validated against it
        with pytest.raises(InvalidRequest) as refused:
            intent.validate({"a": "guess"})
        # Then it is a clear refusal, and neither the server nor the file was touched
        message = str(refused.value)
        assert "cannot be applied" in message and ref in message
        assert "INTERNAL-SECRET" not in message and "SECRET-ON-API-HOST" not in message
    assert secret_server == [] and OPENED == []


def test_a_pathological_pattern_runs_in_linear_time() -> None:
    # Given a tool schema with a pattern that backtracks exponentially in Python's `re`
    intent = Intent("tool.x", "tools", "agent", JsonInputs, "x", lambda _: None,
                    json_schema={"type": "object", "properties": {
                        "a": {"type": "string", "pattern": "^(a+)+$", "maxLength": 100_000}}})
    started = time.monotonic()
    # When an input made to defeat it is validated
    with pytest.raises(InvalidRequest, match="does not match"):
        intent.validate({"a": "a" * 100 + "!"})
    # Then it is answered at once (Python's `re` takes about 2**100 steps here)
    assert time.monotonic() - started < 1
