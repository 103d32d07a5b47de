"""`/v1/agents`: external agents a tenant registers (reference 003), and its compatibility
routes: `POST /internal/invoke` (a run is a job) and `GET /v1/runs/{run_id}/events`."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api import service, streaming
from api.deps import StateDep, TenantDep
from api.openapi import BODY, KEYED, errors
from api.schemas import EventPublic, HttpUrlText
from core.errors import InvalidRequest
from core.models import Agent, EventType
from core.store import agents
from tasks.agents import PREFIX, InputMessage

router = APIRouter(tags=["agents"])
AgentId = Annotated[str, Path(description="The agent's id (its intent is `agent.<id>`).")]
RUN_NAMES = {EventType.job_started: "run_started", EventType.job_succeeded: "run_done",
             EventType.job_failed: "run_failed", EventType.job_cancelled: "run_failed"}


class AgentRegistration(BaseModel):
    """An agent to register: it must answer `GET {endpoint}/health` with a 2xx."""

    agent_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$",
                          description="Its id; the intent `agent.<id>` runs it.")
    name: str = Field(min_length=1, max_length=200, description="A name for people.")
    endpoint: HttpUrlText = Field(
        description="Base URL serving `POST /invoke` (SSE) and `GET /health`; private "
        "addresses are refused unless allow-listed (CALLBACK_ALLOWED_NETWORKS).")


class AgentPublic(BaseModel):
    """A registered agent."""

    agent_id: str
    name: str
    endpoint: str
    intent: str = Field(description="The intent that runs it.")
    created_at: datetime


def _public(agent: Agent) -> AgentPublic:
    return AgentPublic(agent_id=agent.agent_id, name=agent.name, endpoint=agent.endpoint,
                       intent=f"{PREFIX}{agent.agent_id}", created_at=agent.created_at)


@router.post("/v1/agents/register", operation_id="registerAgent", response_model=AgentPublic,
             status_code=201, summary="Register an agent", responses=errors(*KEYED, *BODY))
def register_agent(body: AgentRegistration, state: StateDep, tenant: TenantDep) -> AgentPublic:
    """Register (or update) an external agent after checking its health; it becomes the
    intent `agent.<id>` for this tenant only."""
    endpoint = str(body.endpoint).rstrip("/")
    state.agents.health(endpoint, state.settings.agent.health_timeout)
    with state.db.write() as session:
        return _public(agents.register_agent(session=session, tenant_id=tenant,
                                            agent_id=body.agent_id, name=body.name,
                                            endpoint=endpoint))


@router.get("/v1/agents", operation_id="listAgents", response_model=list[AgentPublic],
            summary="List agents", responses=errors(*KEYED))
def list_agents(state: StateDep, tenant: TenantDep) -> list[AgentPublic]:
    """The caller's registered agents."""
    with state.db.read() as session:
        return [_public(a) for a in agents.list_agents(session=session, tenant_id=tenant)]


class AgentHealth(BaseModel):
    """Whether an agent answered `GET {endpoint}/health` just now."""

    agent_id: str
    healthy: bool = Field(description="It answered a 2xx in time.")
    detail: str | None = Field(None, description="Why not, when it did not.")


@router.get("/v1/agents/{agent_id}/health", operation_id="checkAgentHealth",
            response_model=AgentHealth, summary="Check an agent's health",
            responses=errors(*KEYED, 404))
def check_agent_health(agent_id: AgentId, state: StateDep, tenant: TenantDep) -> AgentHealth:
    """Ask the caller's agent `GET {endpoint}/health` now (through the same address guard as
    its registration); an agent that does not answer is reported, not an error."""
    with state.db.read() as session:
        endpoint = agents.get_agent(session=session, tenant_id=tenant, agent_id=agent_id).endpoint
    try:
        state.agents.health(endpoint, state.settings.agent.health_timeout)
    except InvalidRequest as exc:
        return AgentHealth(agent_id=agent_id, healthy=False, detail=str(exc))
    return AgentHealth(agent_id=agent_id, healthy=True)


@router.delete("/v1/agents/{agent_id}", operation_id="deleteAgent", status_code=204,
               summary="Delete an agent", responses=errors(*KEYED, 404))
def delete_agent(agent_id: AgentId, state: StateDep, tenant: TenantDep) -> Response:
    """Forget an agent; its intent disappears (jobs already run keep their events)."""
    with state.db.write() as session:
        agents.delete_agent(session=session, tenant_id=tenant, agent_id=agent_id)
    return Response(status_code=204)


class InvokeRequest(BaseModel):
    """Reference 003's invoke body."""

    agent_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$", description="Which agent.")
    session_id: str | None = Field(None, max_length=200, description="Groups runs.")
    input_message: InputMessage = Field(description="The message the agent answers.")


class InvokeAccepted(BaseModel):
    """A run started: its id is the job's."""

    run_id: str
    session_id: str
    agent_id: str


@router.post("/internal/invoke", operation_id="invokeAgent", response_model=InvokeAccepted,
             status_code=202, summary="Invoke an agent (reference 003)",
             responses=errors(*KEYED, *BODY, 404))
async def invoke_agent(body: InvokeRequest, state: StateDep,
                       tenant: TenantDep) -> InvokeAccepted:
    """Start a run of a registered agent: a job of intent `agent.<id>`; follow it with
    `/v1/runs/{run_id}/events` or the job's routes."""
    inputs = body.model_dump(exclude={"agent_id"}, exclude_none=True)
    request = service.Request(tenant_id=tenant, intent=f"{PREFIX}{body.agent_id}",
                              inputs=inputs, mode="auto", context={}, callback_url=None,
                              idempotency_key=None)
    job, _, _ = await service.submit(state, request, 0.0)
    return InvokeAccepted(run_id=job.id, session_id=body.session_id or job.id,
                          agent_id=body.agent_id)


@router.get("/v1/runs/{run_id}/events", operation_id="getRunEvents",
            response_model=list[EventPublic], summary="Replay a run's events (reference 003)",
            responses=errors(*KEYED, 404))
async def run_events(run_id: Annotated[str, Path(description="The run's (job's) id.")],
                     state: StateDep, tenant: TenantDep) -> list[EventPublic]:
    """A run's events in order, with the run lifecycle names reference 003's clients expect
    (`run_started`, `run_done`, `run_failed`) beside the agent's own."""
    await run_in_threadpool(service.check_job, state, tenant, run_id)
    events = await run_in_threadpool(streaming.read_events, state, run_id, 0)
    return [EventPublic(**{**e, "type": RUN_NAMES.get(e["type"], e["type"])}) for e in events]
