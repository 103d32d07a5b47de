"""The `/orchestrate` webhook contract: sync answers for fast jobs, `accepted` for slow ones."""

from fastapi import APIRouter, Response

from api import service
from api.deps import CallerDep, StateDep, TenantDep
from api.openapi import BODY, KEYED, errors
from api.schemas import (
    CompatJob,
    IdempotencyKey,
    JobIdPath,
    OrchestrateAccepted,
    OrchestrateRequest,
    OrchestrateSync,
    deduplication,
    duration_ms,
)
from core.models import Job, JobStatus

router = APIRouter(tags=["compatibility"])
SYNC_STATUS = {JobStatus.succeeded: "success", JobStatus.failed: "error",
               JobStatus.cancelled: "cancelled"}


def _sync(job: Job, created: bool) -> OrchestrateSync:
    return OrchestrateSync(status=SYNC_STATUS[job.status], result=job.result,
                           error=job.error, mode=job.mode, duration_ms=duration_ms(job) or 0,
                           job_id=job.id, **deduplication(job, created))


@router.post("/orchestrate", operation_id="orchestrate", summary="Execute an intent",
             response_model=OrchestrateSync | OrchestrateAccepted, responses={
                 **errors(*KEYED, *BODY, 404),
                 200: {"model": OrchestrateSync, "description": "The job ended in time."},
                 202: {"model": OrchestrateAccepted,
                       "description": "The job goes on; poll `GET /jobs/{job_id}`."}})
async def orchestrate(
    body: OrchestrateRequest,
    state: StateDep,
    caller: CallerDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> OrchestrateSync | OrchestrateAccepted:
    """The `/orchestrate` webhook contract: the result (200) if the job ends within
    ORCHESTRATOR_SYNC_TIMEOUT, else `accepted` with its id (202); with a `callback_url` it
    is always `accepted`. An unknown intent is a 404 listing the available ones."""
    callback = str(body.callback_url) if body.callback_url else None
    request = service.Request(tenant_id=caller.tenant_id, intent=body.intent,
                              inputs=body.inputs, mode=body.mode, context=body.context,
                              callback_url=callback, idempotency_key=idempotency_key,
                              key_id=caller.key_id)
    wait = 0.0 if callback else state.settings.orchestrator.sync_timeout
    job, _, created = await service.submit(state, request, wait)
    if job.status.terminal:
        return _sync(job, created)
    response.status_code = 202
    return OrchestrateAccepted(job_id=job.id, mode=job.mode, callback_url=job.callback_url,
                               **deduplication(job, created))


@router.get("/jobs/{job_id}", operation_id="getCompatJob", response_model=CompatJob,
            summary="Get a job (orchestrate contract)", responses=errors(*KEYED, 404))
def get_compat_job(job_id: JobIdPath, state: StateDep, tenant: TenantDep) -> CompatJob:
    """A job's status and result in the `/orchestrate` contract's shape, for polling an
    `accepted` answer."""
    job, _ = service.load_job(state, tenant, job_id)
    return CompatJob(job_id=job.id, status=job.status, intent=job.intent, mode=job.mode,
                     result=job.result, error=job.error, duration_ms=duration_ms(job))
