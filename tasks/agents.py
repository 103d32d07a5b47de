"""External agents as intents: `agent.<id>` for the agents a tenant registered.

A step POSTs `{session_id, run_id, input_message}` to the agent's `/invoke` and records its
stream as events: `agent_invoke_started`, one `agent_stream_delta` per delta (`{text}`),
`agent_invoke_done`. A stream that breaks off is a failed attempt, tried again by the retry
policy (the deltas of each attempt carry its number). A run with a `session_id` keeps its
transcript in that chat session, as chat does: the user's message, one tool message for the
agent's turn and the assistant's answer.
"""

from collections.abc import Iterable
from functools import partial
from typing import Any

from pydantic import BaseModel, Field

from core.models import Agent, EventType, PoolName
from core.store import sessions as chats
from core.store.agents import list_agents
from tasks.engine.context import StepContext
from tasks.engine.registry import Intent, ResourceProvider

PREFIX = "agent."


class InputMessage(BaseModel):
    """One chat message to the agent."""

    role: str = Field("user", max_length=32, description="Who speaks: user, system, …")
    content: str = Field(max_length=100_000, description="What is said.")


class AgentInputs(BaseModel):
    """What an agent run is given (reference 003's invoke body)."""

    input_message: InputMessage = Field(description="The message the agent answers.")
    session_id: str | None = Field(None, max_length=200,
                                   description="Groups runs; the job id when absent.")


def run_agent(agent: Agent, step: StepContext) -> dict[str, Any]:
    """Invoke the agent and read its stream; the final message is the output."""
    rt, inputs = step.resources, step.inputs
    assert isinstance(inputs, AgentInputs)
    session_id = inputs.session_id or step.job_id
    payload = {"session_id": session_id, "run_id": step.job_id,
               "input_message": inputs.input_message.model_dump()}
    step.emit(EventType.agent_invoke_started, {"agent_id": agent.agent_id, "run_id": step.job_id,
                                       "session_id": session_id})
    timeout = min(rt.settings.agent.timeout_ms / 1000, max(step.remaining(), 1.0))

    def delta(text: str, attempt: int) -> None:
        step.emit(EventType.agent_stream_delta,
                  {"text": text, "run_id": step.job_id, "attempt": attempt})

    _transcript(step, inputs, [chats.Turn("user", inputs.input_message.content)])
    run = rt.agents.invoke(step.tenant_id, agent.endpoint, payload, timeout, delta)
    done = {"final_message": run.final_message, "usage": run.usage}
    step.emit(EventType.agent_invoke_done, {**done, "run_id": step.job_id})
    _transcript(step, inputs, [
        chats.Turn("tool", f"agent.{agent.agent_id}: answered",
                   {"intent": f"{PREFIX}{agent.agent_id}", "run_id": step.job_id,
                    "usage": run.usage}),
        chats.Turn("assistant", run.final_message or run.text)])
    return {**done, "text": run.text, "agent_id": agent.agent_id, "session_id": session_id}


def _transcript(step: StepContext, inputs: AgentInputs, turns: list[chats.Turn]) -> None:
    """Add the run's turns to its chat session (once per run, whatever the retries)."""
    if inputs.session_id is None:
        return
    with step.resources.db.write() as session:
        chats.open_session(session=session, tenant_id=step.tenant_id,
                           session_id=inputs.session_id)
        chats.add_turns(session=session, tenant_id=step.tenant_id,
                        session_id=inputs.session_id, job_id=step.job_id, turns=turns)


def agent_intent(agent: Agent) -> Intent:
    return Intent(f"{PREFIX}{agent.agent_id}", PoolName.flow, "agent", AgentInputs,
                  f"The external agent {agent.name!r}: streams its answer as events.",
                  partial(run_agent, agent))


class AgentProvider(ResourceProvider):
    """The agents each tenant registered, read from the job store."""

    prefix = PREFIX

    def intents(self, tenant_id: str | None) -> Iterable[Intent]:
        if tenant_id is None:
            return []
        with self.resources.db.read() as session:
            return [agent_intent(agent)
                    for agent in list_agents(session=session, tenant_id=tenant_id)]
