"""Liveness, readiness and metrics."""

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from api import metrics
from api.deps import StateDep
from api.state import AppState
from workers import heartbeat
from workers.pools import POOLS

router = APIRouter(tags=["operations"])


@router.get("/health", operation_id="health")
def health() -> dict[str, str]:
    """The API process is up."""
    return {"status": "ok"}


def _check(fn: Any) -> str:
    try:
        fn()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as text
        return f"down: {type(exc).__name__}: {exc}"


@router.get("/ready", operation_id="ready")
def ready(state: StateDep) -> JSONResponse:
    """Ready when the broker and job store answer and every pool has a live worker.

    `checks.planner` says which planner prompts get: the model, or the rule-based fallback.
    """
    def db() -> None:
        with state.db.read() as session:
            session.exec(text("SELECT 1"))  # type: ignore[call-overload]

    checks: dict[str, Any] = {"broker": _check(state.redis.ping), "database": _check(db)}
    ttl = state.settings.worker.heartbeat_seconds * 3
    pools = {}
    for pool in POOLS:
        try:
            live = heartbeat.live_workers(state.redis, pool, ttl)
        except Exception:  # noqa: BLE001
            live = []
        pools[pool] = live or "no live worker"
    checks["pools"] = pools
    checks["planner"] = _check_planner(state)
    ok = all(v == "ok" for v in (checks["broker"], checks["database"])) and all(
        isinstance(v, list) for v in pools.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                        status_code=200 if ok else 503)


def _check_planner(state: AppState) -> dict[str, Any]:
    try:
        return state.llm.planner()
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as text
        return {"planner": "unknown", "reason": f"{type(exc).__name__}: {exc}"}


@router.get("/metrics", operation_id="metrics", response_class=Response)
def prometheus(state: StateDep) -> Response:
    """Prometheus metrics."""
    return Response(metrics.render(state), media_type=CONTENT_TYPE_LATEST)
