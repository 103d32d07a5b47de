"""`/v1/breakers`: the circuit breaker of every upstream, read from Redis, and a manual reset."""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from adapters.breakers import Breakers, BreakerState
from api.deps import StateDep, TenantDep
from api.routes.jobs import ERRORS

router = APIRouter(prefix="/v1/breakers", tags=["operations"])


class BreakerPublic(BaseModel):
    """One upstream's circuit breaker, as every process sees it."""

    name: str = Field(description="The upstream the breaker guards.")
    state: str = Field(description="`closed`, `open` or `half-open`.")
    failures: int = Field(description="Consecutive failures counted against the breaker.")
    opened_at: str | None = Field(description="When it last opened (ISO 8601), unless closed.")
    reopens_at: str | None = Field(description="When an open breaker admits a trial call.")
    retry_after: float | None = Field(description="Seconds until then, for an open breaker.")
    retries: int = Field(description="Retries of calls to this upstream, ever.")
    failures_total: int = Field(description="Failed calls counted against the breaker, ever.")


def _public(state: BreakerState) -> BreakerPublic:
    return BreakerPublic.model_validate(state)


def _breakers(state: StateDep) -> Breakers:
    return Breakers(state.redis, state.settings.breaker)


@router.get("", operation_id="listBreakers", response_model=list[BreakerPublic],
            responses=ERRORS)
def list_breakers(state: StateDep, tenant: TenantDep) -> list[BreakerPublic]:
    """Every circuit breaker any process has used, with its state and counters."""
    return [_public(item) for item in _breakers(state).states()]


@router.post("/{name}/reset", operation_id="resetBreaker", response_model=BreakerPublic,
             responses=ERRORS)
def reset_breaker(name: str, state: StateDep, tenant: TenantDep) -> BreakerPublic:
    """Close a circuit breaker for every process, so calls to its upstream go through again."""
    return _public(_breakers(state).reset(name))
