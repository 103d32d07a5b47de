"""The `/orchestrate` webhook contract: sync answers for fast jobs, `accepted` for slow ones."""

from typing import Annotated

from fastapi import APIRouter, Header, Response

from api import service
from api.deps import StateDep, TenantDep
from api.routes.jobs import ERRORS
from api.schemas import (
    CompatJob,
    OrchestrateAccepted,
    OrchestrateRequest,
    OrchestrateSync,
    duration_ms,
)
from core.models import Job, JobStatus

router = APIRouter(tags=["compatibility"])
SYNC_STATUS = {JobStatus.succeeded: "success", JobStatus.failed: "error",
               JobStatus.cancelled: "cancelled"}


def _sync(job: Job) -> OrchestrateSync:
    return OrchestrateSync(status=SYNC_STATUS[job.status], result=job.result,
                           error=job.error, mode=job.mode, duration_ms=duration_ms(job) or 0,
                           job_id=job.id)


@router.post("/orchestrate", operation_id="orchestrate",
             response_model=OrchestrateSync | OrchestrateAccepted,
             responses={**ERRORS, 202: {"model": OrchestrateAccepted}})
async def orchestrate(
    body: OrchestrateRequest,
    state: StateDep,
    tenant: TenantDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> OrchestrateSync | OrchestrateAccepted:
    """Execute any intent: the result if it ends within the sync timeout, else a job id."""
    callback = str(body.callback_url) if body.callback_url else None
    request = service.Request(tenant_id=tenant, intent=body.intent, inputs=body.inputs,
                              mode=body.mode, context=body.context, callback_url=callback,
                              idempotency_key=idempotency_key)
    wait = 0.0 if callback else state.settings.orchestrator.sync_timeout
    job, _, _ = await service.submit(state, request, wait)
    if job.status.terminal:
        return _sync(job)
    response.status_code = 202
    return OrchestrateAccepted(job_id=job.id, mode=job.mode, callback_url=job.callback_url)


@router.get("/jobs/{job_id}", operation_id="getCompatJob", response_model=CompatJob,
            responses=ERRORS)
def get_compat_job(job_id: str, state: StateDep, tenant: TenantDep) -> CompatJob:
    """A job's status and result in the `/orchestrate` contract's shape."""
    job, _ = service.load_job(state, tenant, job_id)
    return CompatJob(job_id=job.id, status=job.status, intent=job.intent, mode=job.mode,
                     result=job.result, error=job.error, duration_ms=duration_ms(job))
