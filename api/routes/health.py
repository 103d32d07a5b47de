"""Liveness, readiness and metrics."""

from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from sqlalchemy import text

from api import metrics
from api.deps import OperatorFlagDep, StateDep, metrics_reader
from api.openapi import KEYED, errors
from api.state import AppState
from tasks import mcp
from tasks.engine import heartbeat
from tasks.engine.pools import POOLS

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    """The API process answers."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether the stack can take and run jobs, and what is missing if not."""

    status: Literal["ready", "not ready"]
    checks: dict[str, Any] = Field(description="`broker` and `database`: `ok` or `down` (why, "
                                   "for an operator's key); `pools`: each pool's `live` worker "
                                   "count, and for an operator's key its `workers` (host and "
                                   "pid); `planner`: the model or the rule-based fallback; "
                                   "`mcp`: each configured MCP server's last tool discovery "
                                   "(`ok` and its tool count, `failed`, or `pending`; the "
                                   "error for an operator's key).")


@router.get("/health", operation_id="health", summary="Liveness", response_model=Health)
def health() -> Health:
    """The API process is up (it checks nothing else: see `/ready`)."""
    return Health()


def _check(fn: Any, detail: bool) -> str:
    try:
        fn()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as text
        # The reason can name hosts and ports, which only an operator sees.
        return f"down: {type(exc).__name__}: {exc}" if detail else "down"


def _pools(state: AppState, detail: bool) -> dict[str, dict[str, Any]]:
    """Each pool's live worker count; its workers' hosts and pids only with `detail`."""
    ttl = state.settings.worker.heartbeat_seconds * 3
    pools: dict[str, dict[str, Any]] = {}
    for pool in POOLS:
        try:
            live = heartbeat.live_workers(state.redis, pool, ttl)
        except Exception:  # noqa: BLE001 - a broker outage is reported by `broker`
            live = []
        pools[pool] = {"live": len(live), **({"workers": live} if detail else {})}
    return pools


@router.get("/ready", operation_id="ready", summary="Readiness", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "Something is missing: "
                             "`checks` says what."}},
            # The key is optional (`{}` is the keyless alternative): probes send none.
            openapi_extra={"security": [{}]})
def ready(state: StateDep, operator: OperatorFlagDep) -> JSONResponse:
    """Ready (200) when the broker and the job store answer and every pool has a live
    worker; otherwise 503 naming what is missing. `checks.planner` says which planner prompts
    get: the model, or the rule-based fallback. Needs no key (it is the probe); an operator's
    key adds the workers' hosts and pids and the reasons for a failure."""
    def db() -> None:
        with state.db.read() as session:
            session.exec(text("SELECT 1"))  # type: ignore[call-overload]

    checks: dict[str, Any] = {"broker": _check(state.redis.ping, operator),
                              "database": _check(db, operator),
                              "pools": _pools(state, operator),
                              "planner": _check_planner(state, operator),
                              "mcp": _mcp_servers(state, operator)}
    ok = checks["broker"] == checks["database"] == "ok" and all(
        p["live"] for p in checks["pools"].values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                        status_code=200 if ok else 503)


def _mcp_servers(state: AppState, detail: bool) -> dict[str, Any]:
    """Each MCP server's last discovery; it tells, it does not decide readiness (the other
    intents run without it). The error (a path, a host) only with `detail`."""
    try:
        servers = mcp.discovery(state.redis, state.settings.mcp)
    except Exception as exc:  # noqa: BLE001 - a broker outage is reported by `broker`
        return {"unknown": f"{type(exc).__name__}: {exc}" if detail else "down"}
    return {name: {k: v for k, v in outcome.items() if detail or k != "error"}
            for name, outcome in servers.items()}


def _check_planner(state: AppState, detail: bool) -> dict[str, Any]:
    try:
        planner = state.llm.planner()
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as text
        return {"planner": "unknown", **({"reason": f"{type(exc).__name__}: {exc}"}
                                         if detail else {})}
    # The model's base URL can name an internal host.
    return planner if detail else {k: v for k, v in planner.items() if k != "base_url"}


@router.get("/metrics", operation_id="metrics", response_class=Response, summary="Prometheus "
            "metrics", dependencies=[Depends(metrics_reader)], responses={
                **errors(*KEYED, 403), 200: {
                    "description": "Metrics in the Prometheus text format.",
                    "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
def prometheus(state: StateDep) -> Response:
    """Jobs, queues, workers and upstreams for Prometheus; needs the metrics token
    (API_METRICS_TOKEN) or an operator's API key as `Authorization: Bearer …`."""
    return Response(metrics.render(state), media_type=CONTENT_TYPE_LATEST)
