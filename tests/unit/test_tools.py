"""HTTP tools: URL templates, what registration refuses, how output lines are batched."""

from typing import Any

import pytest

from core.errors import InvalidRequest
from tasks.ssh import OutputLines
from tasks.tools import check_tool, expand


def test_inputs_fill_the_url_encoded_and_the_rest_is_left() -> None:
    url, rest = expand("https://x.example/items/{id}?v={v}", {"id": "a b/c", "v": 2, "n": 1})
    assert url == "https://x.example/items/a%20b%2Fc?v=2" and rest == {"n": 1}


def test_a_missing_url_input_names_the_field() -> None:
    with pytest.raises(InvalidRequest, match="inputs.id: the tool's URL needs it"):
        expand("https://x.example/items/{id}", {})


@pytest.mark.parametrize(("url", "schema", "why"), [
    ("http://{host}/x", {"type": "object"}, "not the host"),
    ("http://10.0.0.1/x", {"type": "object"}, "10.0.0.1 is a private address"),
    ("ftp://example.com/x", {"type": "object"}, "must be http or https"),
    ("https://example.com/x", {"type": "nonsense"}, "not a JSON schema"),
    ("https://example.com/x", {"type": "array"}, '"type": "object"'),
], ids=["templated-host", "private", "scheme", "bad-schema", "not-an-object"])
def test_registration_refuses(url: str, schema: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        check_tool(url, schema, [])


def test_registration_returns_the_host_a_breaker_is_named_by() -> None:
    assert check_tool("https://API.example.com/{x}", {"type": "object"}, []) == "api.example.com"


class Step:
    index = 3

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))


def test_output_lines_are_whole_lines_per_stream_and_the_tail_comes_last() -> None:
    # Given output split at odd places on both streams
    step = Step()
    lines = OutputLines(step)  # type: ignore[arg-type]
    lines.add("stdout", b"one\ntw")
    lines.add("stderr", b"oops\n")
    lines.add("stdout", b"o\nthree")
    # When the command ends
    lines.flush(last=True)
    # Then each stream's lines come whole, with the unterminated tail at the end
    got = {data["stream"]: data["lines"] for _, data in step.events}
    assert got == {"stdout": ["one", "two", "three"], "stderr": ["oops"]}
    assert {kind for kind, _ in step.events} == {"step_output"}
    assert all(data["index"] == 3 for _, data in step.events)
