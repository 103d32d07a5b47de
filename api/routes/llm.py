"""`/v1/llm`: the configured model server (reference 002's management routes)."""

import time

from fastapi import APIRouter

from api.deps import StateDep, TenantDep
from api.openapi import KEYED, POST, errors
from api.schemas import LlmConnection, LlmModels
from core.errors import Conflict, UpstreamError, UpstreamUnavailable

router = APIRouter(prefix="/v1/llm", tags=["llm"])


@router.get("/models", operation_id="listLlmModels", response_model=LlmModels,
            summary="List the model server's models", responses=errors(*KEYED, 409, 502),
            description="Asks the server at LLM_BASE_URL (`GET /models`); 502 when it answers "
            "with an error, 409 when no model is configured, 503 when its breaker is open.")
def list_models(state: StateDep, tenant: TenantDep) -> LlmModels:
    """The models the configured server offers."""
    settings = state.settings.llm
    if not settings.enabled:
        raise Conflict("no model is configured: set LLM_API_KEY (and LLM_BASE_URL)")
    return LlmModels(base_url=settings.base_url, model=settings.model,
                     models=state.llm.models())


@router.post("/test-connection", operation_id="testLlmConnection", response_model=LlmConnection,
             summary="Test the model server", responses=errors(*KEYED, *POST),
             description="One `GET /models` call through the LLM breaker; `ok` false with "
             "the error when it fails (never an error status for the server's failure).")
def test_connection(state: StateDep, tenant: TenantDep) -> LlmConnection:
    """Check that the configured model server answers."""
    settings, started, error = state.settings.llm, time.perf_counter(), None
    if not settings.enabled:
        error = "no model is configured (LLM_API_KEY is not set)"
    else:
        try:
            state.llm.models()
        except (UpstreamError, UpstreamUnavailable) as exc:
            error = str(exc)
    return LlmConnection(ok=error is None, base_url=settings.base_url, model=settings.model,
                         latency_ms=int((time.perf_counter() - started) * 1000),
                         planner=state.llm.planner(), error=error)
