"""`/v1/inbox`: every held or waiting step of the caller's jobs, for the console's inbox."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlmodel import Session

from api.deps import StateDep, TenantDep
from api.openapi import KEYED, errors
from core.models import JobStep
from core.store import queries
from core.vault import Vault

router = APIRouter(prefix="/v1/inbox", tags=["jobs"])


class PendingStep(BaseModel):
    """A step that waits for a person (held) or an outside system (waiting)."""

    job_id: str
    index: int
    intent: str
    status: Literal["held", "waiting"]
    inputs: dict[str, Any] = Field(description="The exact inputs a held step will run with.")
    host: str | None = Field(None, description="The SSH host or target, when the step has one.")
    command: str | None = Field(None, description="The exact command, when the step has one.")
    reason: str | None = Field(None, description="Why it is held or what it waits for.")
    deadline: datetime | None = Field(None, description="When the hold or wait ends (fails).")
    token: str | None = Field(None, description=(
        "A held step's approval token (as `GET /v1/jobs/{id}` shows it under `pending`)."))


def _pending(session: Session, vault: Vault, step: JobStep) -> PendingStep:
    action = queries.pending_action(session=session, steps=[step], vault=vault) or {}
    shown = action.get("inputs")
    inputs: dict[str, Any] = shown if isinstance(shown, dict) else step.inputs
    return PendingStep(
        job_id=step.job_id, index=step.index, intent=step.intent, status=str(step.status),
        inputs=inputs, host=_text(inputs.get("host")), command=_text(inputs.get("command")),
        reason=step.reason, deadline=step.deadline, token=action.get("token"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@router.get("", operation_id="listPendingSteps", response_model=list[PendingStep],
            summary="Held and waiting steps", responses=errors(*KEYED, 422))
def list_pending(
    state: StateDep, tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many.")] = 100,
) -> list[PendingStep]:
    """Every held or waiting step of the caller's jobs, the nearest deadline first, with what
    it will run (intent, host, command, inputs), why, until when, and a held step's token."""
    with state.db.read() as session:
        steps = queries.pending_steps(session=session, tenant_id=tenant, limit=limit)
        return [_pending(session, state.vault, step) for step in steps]
