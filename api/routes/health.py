"""Liveness, readiness and metrics."""

from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from sqlalchemy import text

from api import metrics
from api.deps import StateDep, metrics_reader
from api.openapi import KEYED, errors
from api.state import AppState
from workers import heartbeat
from workers.pools import POOLS

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    """The API process answers."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether the stack can take and run jobs, and what is missing if not."""

    status: Literal["ready", "not ready"]
    checks: dict[str, Any] = Field(description="`broker` and `database`: `ok` or why not; "
                                   "`pools`: each pool's live workers, or `no live worker`.")


@router.get("/health", operation_id="health", summary="Liveness", response_model=Health)
def health() -> Health:
    """The API process is up (it checks nothing else: see `/ready`)."""
    return Health()


def _check(fn: Any) -> str:
    try:
        fn()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as text
        return f"down: {type(exc).__name__}: {exc}"


@router.get("/ready", operation_id="ready", summary="Readiness", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "Something is missing: "
                             "`checks` says what."}})
def ready(state: StateDep) -> JSONResponse:
    """Ready (200) when the broker and the job store answer and every pool has a live
    worker; otherwise 503 naming what is missing. `checks.planner` says which planner prompts
    get: the model, or the rule-based fallback."""
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


@router.get("/metrics", operation_id="metrics", response_class=Response, summary="Prometheus "
            "metrics", dependencies=[Depends(metrics_reader)], responses={
                **errors(*KEYED, 403), 200: {
                    "description": "Metrics in the Prometheus text format.",
                    "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
def prometheus(state: StateDep) -> Response:
    """Jobs, queues, workers and upstreams for Prometheus; needs the metrics token
    (API_METRICS_TOKEN) or an operator's API key as `Authorization: Bearer …`."""
    return Response(metrics.render(state), media_type=CONTENT_TYPE_LATEST)
