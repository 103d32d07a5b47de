"""Every route needs an API key except the few that are public on purpose."""

import httpx
import pytest

from tests.integration.conftest import METRICS_TOKEN, Stack

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


@pytest.mark.parametrize(
    ("who", "status"),
    [("nobody", 401), ("stranger", 401), ("tenant", 403), ("operator", 200), ("token", 200)],
    ids=["no-key", "wrong-key", "tenant-key", "operator-key", "metrics-token"])
def test_metrics_need_the_token_or_an_operator_key(stack: Stack, who: str, status: int) -> None:
    # Given each kind of caller
    keys = {"nobody": None, "stranger": "not-a-key", "tenant": stack.new_key(),
            "operator": stack.new_key(operator=True), "token": METRICS_TOKEN}
    headers = {"Authorization": f"Bearer {keys[who]}"} if keys[who] else {}
    # When it scrapes /metrics
    response = httpx.get(f"{stack.url}/metrics", headers=headers)
    # Then only the metrics token and operators get the metrics
    assert response.status_code == status, response.text
    assert ("orchestrator_jobs" in response.text) == (status == 200)
