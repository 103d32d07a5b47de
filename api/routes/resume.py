"""`/v1/resume/{token}`: an outside system resumes a waiting step; the token is the credential."""

from typing import Annotated

from fastapi import APIRouter, Body, Path

from api import service
from api.deps import StateDep
from api.openapi import BODY, errors
from api.schemas import ResumeAccepted, StoredJson

router = APIRouter(prefix="/v1/resume", tags=["jobs"])


@router.post("/{token}", operation_id="resumeStep", response_model=ResumeAccepted,
             summary="Resume a waiting step", responses=errors(*BODY, 404, 409, 503))
def resume_step(
    state: StateDep,
    token: Annotated[str, Path(min_length=1, max_length=200,
                               description="The token of the step's resume URL.")],
    body: Annotated[StoredJson, Body(description="The step's output.")],
) -> ResumeAccepted:
    """Resume a waiting step with this JSON body as its output; no API key, single use.

    404 when the token is unknown or was used; 409 when the step's deadline passed (it failed).
    """
    job_id, index = service.resume(state, token, body)
    return ResumeAccepted(job_id=job_id, index=index)
