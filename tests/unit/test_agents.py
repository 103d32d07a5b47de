"""Registering an agent: an endpoint that cannot be reached is the caller's 422, never a 500."""

import pytest
import redis

from adapters import agents, netguard
from adapters.breakers import Breakers
from core.errors import InvalidRequest
from core.settings import BreakerSettings, RetrySettings


def test_a_resolver_too_slow_for_the_health_check_is_a_422(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a resolver that does not answer within the health check's time
    def slow(host: str, port: int, timeout: float) -> list[netguard.Address]:
        raise netguard.GuardTimeout(f"resolving {host}")

    monkeypatch.setattr(netguard, "resolve", slow)
    # When an agent's health is checked, then the endpoint is refused with the reason
    with pytest.raises(InvalidRequest, match="GET /health failed: GuardTimeout"):
        client = agents.AgentClient([], Breakers(redis.Redis(port=1), BreakerSettings()),
                                    RetrySettings())
        client.health("https://agent.example.com", 0.1)
