"""`/v1/usage`: a tenant's model use, jobs per intent and budget, per UTC day or month."""

from typing import Literal

from fastapi import APIRouter, Query

from api import service
from api.deps import CallerDep, StateDep
from api.openapi import KEYED, errors
from api.schemas import UsageReport

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("", operation_id="getUsage", response_model=UsageReport, summary="Usage and budget",
            responses=errors(*KEYED, 403, 404, 422))
def get_usage(state: StateDep, caller: CallerDep,
              period: Literal["day", "month"] = Query(
                  "month", description="`day` (since 00:00 UTC) or `month` (since the 1st)."),
              tenant_id: str | None = Query(
                  None, max_length=64, description="Another tenant's id (operator keys only).")
              ) -> UsageReport:
    """Model tokens, cost and calls summed from the usage the caller's steps recorded, the jobs
    submitted per intent, and the budget they count against."""
    return service.usage_report(state, caller.tenant_id, caller.operator,
                                tenant_id or caller.tenant_id, period)
