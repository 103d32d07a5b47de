"""Keys made before scopes, the scope table's completeness, the limiter's headers and its
failing open."""

import logging
from pathlib import Path

import pytest
import redis
from alembic import command
from fastapi import APIRouter, FastAPI
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import text

from api.deps import CallerDep, get_caller
from api.ratelimit import Bucket, RateLimiter, Verdict
from api.scopes import check_routes
from core.db import Database
from core.errors import ConfigError
from core.migrate import alembic_config, upgrade
from core.store.keys import list_keys, scopes_of
from core.store.rates import Rate, Rates
from core.vault import new_key
from tests.services import free_port

EVERY_TENANT_SCOPE = {"jobs:write", "jobs:read", "approve", "registry:write", "memory:write",
                      "admin"}


def test_keys_made_before_scopes_keep_what_they_could_do(tmp_path: Path) -> None:
    # Given a job store of revision 0013 with a plain tenant's key and an operator's
    url = f"sqlite:///{tmp_path}/old.db"
    Database(url).dispose()
    command.upgrade(alembic_config(url), "0013")
    db = Database(url)
    with db.write() as session:
        for tenant, operator in (("ten_plain", False), ("ten_ops", True)):
            session.execute(text(
                "INSERT INTO tenants (id, name, created_at, webhook_secret, operator) "
                "VALUES (:id, :id, '2026-01-01 00:00:00', 'x', :operator)"),
                {"id": tenant, "operator": operator})
            session.execute(text(
                "INSERT INTO api_keys (id, tenant_id, key_hash, created_at) "
                "VALUES (:id, :tenant, :id, '2026-01-01 00:00:00')"),
                {"id": f"key_{tenant}", "tenant": tenant})
    # When it is upgraded
    upgrade(url, [new_key()])
    # Then the plain key has every tenant scope, the operator's key `operator` too
    with db.read() as session:
        plain = {s.value for s in scopes_of(list_keys(session=session, tenant_id="ten_plain")[0])}
        ops = {s.value for s in scopes_of(list_keys(session=session, tenant_id="ten_ops")[0])}
    db.dispose()
    assert plain == EVERY_TENANT_SCOPE
    assert ops == EVERY_TENANT_SCOPE | {"operator"}


def test_a_keyed_route_missing_from_the_scope_table_stops_the_app() -> None:
    app = FastAPI()

    @app.get("/v1/new", operation_id="brandNew")
    def brand_new(caller: CallerDep) -> str:
        return caller.key_id

    with pytest.raises(ConfigError, match="brandNew.*ROUTE_SCOPES"):
        check_routes(app, get_caller)


def test_a_keyed_route_of_an_included_router_missing_from_the_table_stops_the_app() -> None:
    # FastAPI keeps an included router as one entry of app.routes, as the app's routers are
    router = APIRouter()

    @router.get("/v1/agents/{agent_id}/new", operation_id="brandNewIncluded")
    def brand_new(agent_id: str, caller: CallerDep) -> str:
        return caller.key_id

    app = FastAPI()
    app.include_router(router)
    with pytest.raises(ConfigError, match="brandNewIncluded.*ROUTE_SCOPES"):
        check_routes(app, get_caller)


def test_the_headers_follow_the_ietf_draft() -> None:
    verdict = Verdict(False, (Bucket("key", Rate(20, 20), 0, 0.4, 1.0),
                              Bucket("tenant", Rate(100, 300), 250, 0, 0.5)))
    assert verdict.headers() == {
        "RateLimit-Policy": '"key";q=20;w=1, "tenant";q=300;w=3',
        "RateLimit": '"key";r=0;t=1, "tenant";r=250;t=1',
        "Retry-After": "1"}


def test_the_limiter_fails_open_with_a_warning_when_redis_is_down(
        caplog: pytest.LogCaptureFixture) -> None:
    # Given a limiter whose Redis is a port nothing listens on
    # (redis-py's own retries, with their back-off, left out: each request would wait ~4 s)
    limiter = RateLimiter(redis.Redis(port=free_port(), socket_connect_timeout=1,
                                      retry=Retry(NoBackoff(), 0)))
    rates = Rates(Rate(1, 1), Rate(1, 1))
    # When requests come
    with caplog.at_level(logging.WARNING, logger="api.ratelimit"):
        verdicts = [limiter.take("key_a", "ten_a", rates) for _ in range(3)]
    # Then they pass, with one warning
    assert verdicts == [None, None, None]
    assert [r.getMessage() for r in caplog.records].count(
        "rate limits not enforced: Redis unavailable (ConnectionError); requests pass") == 1
