"""Operator keys: only they reset what all tenants share; tenants keep to their own."""

from collections.abc import Iterator

import httpx
import pytest
import redis

from adapters.breakers import Breakers
from core.settings import BreakerSettings
from tests.integration.conftest import Stack

SHARED = "llm:test-shared-upstream"
FOREIGN = "callback:ten_another:receiver.example.org:443"


@pytest.fixture
def open_breakers(stack: Stack) -> Iterator[Breakers]:
    breakers = Breakers(redis.Redis.from_url(stack.env["REDIS_URL"]), BreakerSettings())
    for name in (SHARED, FOREIGN):
        breakers.breaker(name).open()
    yield breakers
    for name in (SHARED, FOREIGN):
        breakers.reset(name)


@pytest.fixture
def operator(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client(stack.new_key(operator=True)) as http:
        yield http


def names(http: httpx.Client) -> set[str]:
    return {b["name"] for b in http.get("/v1/breakers").json()}


def test_a_tenant_sees_a_shared_breaker_but_may_not_reset_it(
        open_breakers: Breakers, client: httpx.Client) -> None:
    assert SHARED in names(client) and FOREIGN not in names(client)
    refused = client.post(f"/v1/breakers/{SHARED}/reset")
    assert refused.status_code == 403 and "operator key" in refused.json()["error"]
    assert client.post(f"/v1/breakers/{FOREIGN}/reset").status_code == 404
    assert {s["name"]: s["state"] for s in open_breakers.states()}[SHARED] == "open"


def test_an_operator_sees_and_resets_every_breaker(
        open_breakers: Breakers, operator: httpx.Client) -> None:
    assert {SHARED, FOREIGN} <= names(operator)
    for name in (SHARED, FOREIGN):
        reset = operator.post(f"/v1/breakers/{name}/reset")
        assert reset.status_code == 200 and reset.json()["state"] == "closed"
