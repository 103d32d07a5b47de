"""`/v1/breakers`: the circuit breaker of every upstream, read from Redis, and a manual reset."""

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from adapters import netguard
from adapters.breakers import Breakers, BreakerState
from api.deps import CallerDep, StateDep
from api.metrics import TENANT_CHOSEN
from api.openapi import KEYED, POST, errors
from core.errors import Forbidden, NotFound

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


def _tenant_chosen(name: str) -> bool:
    """Whether a tenant named this upstream (a callback host, an HTTP call's or an agent's)."""
    return name.startswith(tuple(TENANT_CHOSEN))


def _own_host(tenant: str, name: str) -> bool:
    """Whether `name` is the tenant's own breaker of a host its callbacks or HTTP calls go to
    (each tenant has its own: `callback:<tenant>:<host>:<port>`)."""
    return any(netguard.tenant_of_upstream(prefix, name) == tenant for prefix in TENANT_CHOSEN)


def _visible(tenant: str, name: str) -> bool:
    """Shared upstreams are visible to all; a tenant's own hosts' breakers to it alone."""
    return not _tenant_chosen(name) or _own_host(tenant, name)


@router.get("", operation_id="listBreakers", response_model=list[BreakerPublic],
            summary="List circuit breakers", responses=errors(*KEYED))
def list_breakers(state: StateDep, caller: CallerDep) -> list[BreakerPublic]:
    """Every circuit breaker the caller's calls go through (every one, for an operator)."""
    return [_public(item) for item in _breakers(state).states()
            if caller.operator or _visible(caller.tenant_id, item["name"])]


@router.post("/{name}/reset", operation_id="resetBreaker", response_model=BreakerPublic,
             summary="Reset a circuit breaker", responses=errors(*KEYED, *POST, 403, 404))
def reset_breaker(name: Annotated[str, Path(description="The breaker's `name`.")],
                  state: StateDep, caller: CallerDep) -> BreakerPublic:
    """Close a circuit breaker for every process, so calls to its upstream go through again.

    A tenant may reset the breaker of a host its callbacks go to; the breakers of shared
    upstreams need an operator key (`orchestrator keys create --operator`).
    """
    if not caller.operator and not _own_host(caller.tenant_id, name):
        if _tenant_chosen(name):
            raise NotFound(f"no circuit breaker named '{name}'")
        raise Forbidden(f"'{name}' guards an upstream all tenants share: resetting it needs "
                        "an operator key (orchestrator keys create --operator)")
    return _public(_breakers(state).reset(name))
