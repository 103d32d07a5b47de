"""One rule for every JSON the API stores: the worst allowed input reads back, the rest is a 422."""

import json
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Stack

BODY_LIMIT = 1024 * 1024  # API_MAX_BODY_BYTES' default
EDGE_NUMBERS = [1e308, -1e308, 5e-324, -0.0, 0, 2**63, -(2**63) - 1, 10**300, 0.1]
# Escaped as JSON sends them: a surrogate pair (an emoji), U+FFFF, right-to-left, combining.
UNICODE = '"\\ud83d\\ude00 \\uffff \\u202e e\\u0301 \\u00e9 \\u4e2d \\t\\n\\"\\\\"'


def _nested(depth: int, inner: str = "{}") -> str:
    return '{"a": ' * (depth - 1) + inner + "}" * (depth - 1)


def worst(pad: int) -> str:
    """A JSON object at the limits the rule allows: 32 levels deep, edge numbers, odd Unicode
    (keys too), and `pad` bytes of text."""
    numbers = json.dumps(EDGE_NUMBERS)
    leaf = f'{{"n": {numbers}, {UNICODE}: {UNICODE}}}'
    return f'{{"deep": {_nested(30, leaf)}, "pad": "{"x" * pad}", "n": {numbers}}}'


def post(client: httpx.Client, path: str, body: str) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


STORING = {
    "/v1/jobs": lambda value: f'{{"intent": "debug.echo", "inputs": {value}, '
                              f'"context": {{"c": 1}}}}',
    "/v1/jobs context": lambda value: f'{{"intent": "debug.echo", "context": {value}}}',
    "/orchestrate": lambda value: f'{{"intent": "debug.echo", "inputs": {value}}}',
    "/v1/chat": lambda value: f'{{"prompt": "hello", "metadata": {value}}}',
}


def _path(route: str) -> str:
    return route.split()[0]


def test_the_worst_allowed_json_is_stored_and_every_job_reads_back(
        client: httpx.Client) -> None:
    # Given the worst JSON the rule allows, as large as a body may be, on every storing route
    for route, body_of in STORING.items():
        body = body_of(worst(0))
        body = body_of(worst(BODY_LIMIT - len(body.encode()) - 64))
        assert len(body.encode()) <= BODY_LIMIT
        # When it is submitted
        response = post(client, _path(route), body)
        # Then it is accepted
        assert response.status_code in (200, 202), (route, response.text[:500])
    # And the tenant's jobs list, and each job's view reads, with the values as sent
    listed = client.get("/v1/jobs", params={"limit": 100})
    assert listed.status_code == 200, listed.text[:500]
    assert len(listed.json()["items"]) == len(STORING)
    for item in listed.json()["items"]:
        view = client.get(f"/v1/jobs/{item['job_id']}")
        assert view.status_code == 200, view.text[:500]
        stored = view.json()["inputs"] if view.json()["inputs"].get("deep") else view.json()[
            "context"]
        assert stored["n"][:4] == EDGE_NUMBERS[:4] and stored["n"][5:] == EDGE_NUMBERS[5:]
        leaf = stored["deep"]
        for _ in range(29):
            leaf = leaf["a"]
        assert "\U0001f600 \uffff \u202e e\u0301" in list(leaf.values())[-1]


def test_a_tool_schema_at_the_limits_is_stored_and_listed(client: httpx.Client) -> None:
    # Given a tool whose input schema carries edge numbers and odd Unicode
    schema = (f'{{"type": "object", "description": {UNICODE}, "properties": {{"x": '
              f'{{"type": "number", "examples": {json.dumps(EDGE_NUMBERS)}}}}}}}')
    body = (f'{{"name": "edges", "url": "https://example.com/{{x}}", '
            f'"headers": {{"X-Api-Key": "k v\\t"}}, "input_schema": {schema}}}')
    # When it is registered
    response = post(client, "/v1/tools/register", body)
    # Then it is stored, and the tenant's tools list reads back
    assert response.status_code == 201, response.text
    listed = client.get("/v1/tools")
    assert listed.status_code == 200
    assert "edges" in {t["name"] for t in listed.json()}


REFUSED = [
    (_nested(300), "nested deeper than 32 levels"),
    ('{"x": NaN}', "nan is not a JSON number"),
    ('{"x": [1e999]}', "inf is not a JSON number"),
    ('{"x": -Infinity}', "-inf is not a JSON number"),
    ('{"x": "a\\u0000b"}', "(NUL) cannot be stored"),
    ('{"x": "\\ud800"}', "lone surrogate"),
    ('{"\\udfff": 1}', "lone surrogate"),
]
REFUSED_IDS = ["300-deep", "nan", "1e999", "minus-infinity", "nul", "lone-surrogate",
               "lone-surrogate-key"]
ROUTES = {
    **STORING,
    "/v1/chat prompt": lambda value: f'{{"prompt": "hi", "user_id": {_string_of(value)}}}',
    "/chat": lambda value: f'{{"message": {_string_of(value)}}}',
    "/v1/tools/register": lambda value: (
        f'{{"name": "t", "url": "https://example.com", "input_schema": {value}}}'),
    "/v1/agents/register": lambda value: (
        f'{{"agent_id": "a", "name": {_string_of(value)}, "endpoint": "https://example.com"}}'),
    "/v1/resume/no-such-token": lambda value: value,
    "/internal/invoke": lambda value: (
        f'{{"agent_id": "a", "input_message": {{"content": {_string_of(value)}}}}}'),
}


def _string_of(value: str) -> str:
    """The string of a refused value, where a route takes a string there (else the value)."""
    return value.split(": ", 1)[1][:-1] if value.startswith('{"x": "') else value


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize(("value", "says"), REFUSED, ids=REFUSED_IDS)
def test_json_the_store_cannot_keep_is_refused_on_every_route(
        client: httpx.Client, route: str, value: str, says: str) -> None:
    # Given a body holding JSON the store cannot keep or read back (deep, non-finite, NUL,
    # a lone surrogate) where the route stores JSON or a string
    body = ROUTES[route](value)
    # When it is posted
    response = post(client, _path(route), body)
    # Then it is refused with a 422 that says why, and the tenant's jobs still read
    assert response.status_code == 422, response.text[:500]
    assert says in response.json()["error"]
    listed = client.get("/v1/jobs")
    assert listed.status_code == 200 and listed.json()["items"] == []


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/agents/register", {"agent_id": "a", "name": "A",
                             "endpoint": f"https://{'h' * 300}/"}, "endpoint"),
    ("/v1/agents/register", {"agent_id": "a", "name": "A",
                             "endpoint": f"https://{'.'.join(['h' * 64] * 5)}/"}, "endpoint"),
    ("/v1/tools/register", {"name": "t", "url": "HtTps://["}, "url"),
    ("/v1/tools/register", {"name": "t", "url": "https://[::::]/x"}, "url"),
    ("/v1/tools/register", {"name": "t", "url": "https://example.com:99999/"}, "url"),
    ("/v1/tools/register", {"name": "t", "url": "https://example.com",
                            "headers": {"X-Key\r\nInjected": "v"}}, "headers"),
    ("/v1/tools/register", {"name": "t", "url": "https://example.com",
                            "headers": {"X\x01Key": "v"}}, "headers"),
    ("/v1/tools/register", {"name": "t", "url": "https://example.com",
                            "headers": {"X Key": "v"}}, "headers"),
    ("/v1/tools/register", {"name": "t", "url": "https://example.com",
                            "headers": {"X-Key": "v\r\nInjected: 1"}}, "headers"),
], ids=["agent-300-char-host", "agent-64-char-label", "tool-bracket", "tool-bad-ipv6",
        "tool-port", "tool-header-crlf", "tool-header-control", "tool-header-space",
        "tool-header-value-crlf"])
def test_a_registration_that_cannot_work_is_a_422(client: httpx.Client, path: str,
                                                  body: dict[str, Any], field: str) -> None:
    # Given a registration whose URL host or header cannot be used
    # When it is posted
    response = client.post(path, json=body)
    # Then it is a 422 naming the field, not a server error
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"].startswith(field), response.text


def test_the_schema_states_the_rules(stack: Stack) -> None:
    # Given the OpenAPI document
    schemas = httpx.get(f"{stack.url}/openapi.json").json()["components"]["schemas"]
    # Then it states intent-or-prompt, the URL host rule and header names as tokens
    assert schemas["JobCreate"]["oneOf"] == [{"required": ["intent"]},
                                             {"required": ["prompt"]}]
    assert "{0,61}" in schemas["ToolCreate"]["properties"]["url"]["pattern"]
    assert "{0,61}" in schemas["AgentRegistration"]["properties"]["endpoint"]["pattern"]
    headers = schemas["ToolCreate"]["properties"]["headers"]
    assert headers["additionalProperties"] is False and headers["patternProperties"]
