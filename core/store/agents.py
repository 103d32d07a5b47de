"""External agents registered per tenant."""

from sqlmodel import Session, col, select

from core.errors import NotFound
from core.models import Agent


def register_agent(*, session: Session, tenant_id: str, agent_id: str, name: str,
                   endpoint: str) -> Agent:
    """Register (or update) a tenant's agent."""
    agent = session.get(Agent, (tenant_id, agent_id)) or Agent(
        tenant_id=tenant_id, agent_id=agent_id, name=name, endpoint=endpoint)
    agent.name, agent.endpoint = name, endpoint
    session.add(agent)
    return agent


def list_agents(*, session: Session, tenant_id: str) -> list[Agent]:
    return list(session.exec(select(Agent).where(Agent.tenant_id == tenant_id)
                             .order_by(col(Agent.agent_id))))


def get_agent(*, session: Session, tenant_id: str, agent_id: str) -> Agent:
    """A tenant's agent; another tenant's does not exist."""
    agent = session.get(Agent, (tenant_id, agent_id))
    if agent is None:
        raise NotFound(f"agent {agent_id} not found")
    return agent


def delete_agent(*, session: Session, tenant_id: str, agent_id: str) -> None:
    """Forget a tenant's agent; another tenant's does not exist."""
    agent = session.get(Agent, (tenant_id, agent_id))
    if agent is None:
        raise NotFound(f"agent {agent_id} not found")
    session.delete(agent)
