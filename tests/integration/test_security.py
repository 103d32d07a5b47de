"""Every route needs an API key except the few that are public on purpose."""

import httpx
import pytest

from tests.integration.conftest import Stack

# Public on purpose: liveness and readiness for probes, /metrics has its own token, and the
# resume URL's token is the credential of the outside system that calls it.
PUBLIC = {"/health", "/ready", "/metrics", "/v1/resume/{token}"}
NO_KEY = {"missing": {}, "wrong": {"Authorization": "Bearer not-a-key"}}


def _operations(stack: Stack) -> list[tuple[str, str]]:
    document = httpx.get(f"{stack.url}/openapi.json").json()
    return [(method.upper(), path) for path, item in document["paths"].items()
            for method in item if path not in PUBLIC]


def _concrete(path: str) -> str:
    """The path with every `{param}` filled in, so the route matches."""
    return "/".join("x" if part.startswith("{") else part for part in path.split("/"))


@pytest.mark.parametrize("key", list(NO_KEY), ids=list(NO_KEY))
def test_every_route_but_the_public_ones_needs_a_key(stack: Stack, key: str) -> None:
    # Given every operation the OpenAPI document lists, public ones aside
    operations = _operations(stack)
    assert ("GET", "/v1/intents") in operations
    # When each is called without a valid API key
    answers = {(method, path): httpx.request(method, stack.url + _concrete(path),
                                             headers=NO_KEY[key], json={}).status_code
               for method, path in operations}
    # Then each answers 401
    assert {op: code for op, code in answers.items() if code != 401} == {}
