"""The `llm` pool's intents: `llm.plan` turns a prompt into steps, `llm.respond` answers.

`llm.plan` asks the model for a plan (the tenant's intents, the session's recent turns), checks
every step against the registry (one repair round with the error), records it as an event and
grows the job with it and a final `llm.respond`. Without a model, or with its breaker open, the
rule-based planner (`tasks/fallback.py`) plans instead, and the answer says so.
"""

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from adapters.llm import Usage
from core.errors import IntentNotFound, InvalidRequest, UpstreamError, UpstreamUnavailable
from core.models import EventType, PoolName
from core.store import sessions as chats
from core.store.tables import NewStep
from tasks import fallback, planning
from tasks.engine.context import Extend, StepContext
from tasks.engine.registry import REGISTRY
from tasks.engine.resources import Resources

PLAN_ROUNDS = 2
DELTA_SECONDS = 0.1
DELTA_CHARS = 200
NO_MODEL = "no model is configured (LLM_API_KEY is not set)"
Planner = Literal["llm", "rule-based"]


class PromptInputs(BaseModel):
    """A free-text request, and the conversation it belongs to."""

    prompt: str = Field(min_length=1, max_length=20000, description="What the user asks.")
    session_id: str | None = Field(None, max_length=128, description=(
        "Groups messages into a conversation; its recent turns go into planning."))
    namespace: str | None = Field(None, max_length=200, description="Scopes memory steps.")
    twin_id: str | None = Field(None, max_length=200, description="Kept on the session.")
    user_id: str | None = Field(None, max_length=200, description="Kept on the session.")


class StepResult(BaseModel):
    """A planned step as the answer sees it: what ran, why, and its output."""

    index: int
    intent: str
    why: str = ""
    output: Any = None


class RespondInputs(BaseModel):
    """What `llm.respond` answers from: the request and the planned steps' outputs."""

    prompt: str = Field(min_length=1, max_length=20000)
    session_id: str | None = Field(None, max_length=128)
    planner: Planner = "llm"
    fallback_reason: str | None = Field(None, description="Why the rule-based planner planned.")
    note: str = Field("", description="What the rule-based planner could not do.")
    results: list[StepResult] = Field(default_factory=list)


class PlanRejected(Exception):
    """Raised when the model's plan stayed invalid after a repair round."""


# --- llm.plan --------------------------------------------------------------------------------


def plan(step: StepContext) -> Extend:
    """Plan the prompt with the model, or by rule without one; grow the job with the plan."""
    assert isinstance(step.inputs, PromptInputs)
    rt, inputs = step.resources, step.inputs
    history = _open_session(rt, step, inputs)
    intents = _plannable(rt, step.tenant_id)
    reason = NO_MODEL
    if rt.settings.llm.enabled:
        try:
            steps, usage = _model_plan(rt, step, history, intents)
            return _grow(step, "llm", steps, usage)
        except (UpstreamError, UpstreamUnavailable) as exc:
            reason = f"the model is unavailable ({exc})"
    chosen = fallback.plan(inputs.prompt, {i.name for i in intents}, inputs.namespace)
    try:
        return _grow(step, "rule-based", chosen.steps, Usage(), reason, chosen.note)
    except (IntentNotFound, InvalidRequest) as exc:
        return _grow(step, "rule-based", [], Usage(), reason, f"It could not plan: {exc}")


def _open_session(rt: Resources, step: StepContext, inputs: PromptInputs) -> list[tuple[str, str]]:
    """Keep the user's message in its session; return the session's earlier turns."""
    if inputs.session_id is None:
        return []
    with rt.db.write() as session:
        chats.open_session(session=session, tenant_id=step.tenant_id,
                           session_id=inputs.session_id, twin_id=inputs.twin_id,
                           user_id=inputs.user_id, namespace=inputs.namespace)
        recent = chats.recent_messages(
            session=session, tenant_id=step.tenant_id, session_id=inputs.session_id,
            limit=rt.settings.llm.history_turns, exclude_job=step.job_id)
        chats.add_turns(session=session, tenant_id=step.tenant_id,
                        session_id=inputs.session_id, job_id=step.job_id,
                        turns=[chats.Turn("user", inputs.prompt)])
        return [(m.role, m.content) for m in recent if m.role in ("user", "assistant")]


def _plannable(rt: Resources, tenant_id: str) -> list[Any]:
    """What the planner is offered: what the tenant is (never internal steps), destructive
    intents only when LLM_PLAN_DESTRUCTIVE allows, within LLM_PLAN_INTENTS."""
    offered = REGISTRY.offered(tenant_id, rt.settings.orchestrator.exposed_intents)
    allowed = [i for i in offered if rt.settings.llm.plan_destructive or not i.destructive]
    return planning.plannable(allowed, rt.settings.llm.plan_intents)


def _model_plan(rt: Resources, step: StepContext, history: list[tuple[str, str]],
                intents: list[Any]) -> tuple[list[planning.PlannedStep], Usage]:
    """Ask the model for a plan; one more round with the error if it is invalid."""
    assert isinstance(step.inputs, PromptInputs)
    most, first = rt.settings.llm.max_plan_steps, step.index + 1
    names = [i.name for i in intents]
    messages = planning.messages(step.inputs.prompt, history, intents, first, most)
    usage, answer, error = Usage(), "", ""
    for _ in range(PLAN_ROUNDS):
        completion = rt.llm.complete_json(messages, planning.schema(names, most))
        usage.add(completion.usage)
        answer = completion.text
        try:
            plan = planning.parse(answer, set(names), most)
            planning.check_refs(plan, first)
            for planned in plan.steps:
                step.plan_step(planned.intent, planned.inputs)
            return plan.steps, usage
        except (planning.PlanError, IntentNotFound, InvalidRequest) as exc:
            error = str(exc)
        messages += [{"role": "assistant", "content": answer},
                     {"role": "user", "content": f"That plan is invalid: {error}. Answer with "
                                                 "a corrected plan, as the JSON object only."}]
    step.emit(EventType.plan_rejected, {"plan": answer[:4000], "error": error,
                                "usage": usage.public()})
    raise PlanRejected(f"the model's plan is invalid after {PLAN_ROUNDS} rounds: {error}; "
                       f"its plan: {answer[:1000]}")


def _grow(step: StepContext, planner: Planner, steps: list[planning.PlannedStep], usage: Usage,
          reason: str | None = None, note: str = "") -> Extend:
    """The plan step's output and the steps it adds: the planned ones, then the answer."""
    assert isinstance(step.inputs, PromptInputs)
    new = [step.plan_step(s.intent, s.inputs) for s in steps]
    results = [StepResult(index=step.index + 1 + n, intent=s.intent, why=s.why,
                          output={"$ref": f"steps.{step.index + 1 + n}.output"})
               for n, s in enumerate(steps)]
    respond = RespondInputs(prompt=step.inputs.prompt, session_id=step.inputs.session_id,
                            planner=planner, fallback_reason=reason, note=note, results=results)
    new.append(NewStep("llm.respond", PoolName.llm, respond.model_dump(mode="json")))
    shown = [s.model_dump() for s in steps]
    output = {"planner": planner, "fallback": planner != "llm", "fallback_reason": reason,
              "steps": shown, "usage": usage.public()}
    step.emit(EventType.plan_created, {"index": step.index, "planner": planner, "steps": shown,
                               "fallback_reason": reason})
    return Extend(output, new)


# --- llm.respond -----------------------------------------------------------------------------


class Deltas:
    """Token deltas as `llm_delta` events, a few per second rather than one per token."""

    def __init__(self, step: StepContext) -> None:
        self.step = step
        self.pending: list[str] = []
        self.flushed = time.monotonic()
        self.count = 0

    def add(self, text: str) -> None:
        self.pending.append(text)
        if (time.monotonic() - self.flushed >= DELTA_SECONDS
                or sum(map(len, self.pending)) >= DELTA_CHARS):
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.step.emit(EventType.llm_delta, {"index": self.step.index, "seq": self.count,
                                         "text": "".join(self.pending)})
            self.count += 1
            self.pending = []
        self.flushed = time.monotonic()


def respond(step: StepContext) -> dict[str, Any]:
    """Answer from the steps' outputs: streamed from the model, or by rule without one."""
    assert isinstance(step.inputs, RespondInputs)
    rt, inputs = step.resources, step.inputs
    usage, reason = Usage(), inputs.fallback_reason
    text = None
    if inputs.planner == "llm" and rt.settings.llm.enabled:
        deltas = Deltas(step)
        try:
            completion = rt.llm.stream(_answer_messages(rt, step, inputs), deltas.add)
            text, usage = completion.text, completion.usage
        except (UpstreamError, UpstreamUnavailable) as exc:
            reason = f"the model is unavailable ({exc})"
        deltas.flush()
    if text is None:
        reason = reason or NO_MODEL
        text = fallback.answer(reason, inputs.note,
                               [(r.intent, r.output) for r in inputs.results])
    actions = [planning.summary(r.intent, r.output) for r in inputs.results]
    _record_turn(rt, step, inputs, text)
    return {"response": text, "actions": actions, "planner": inputs.planner,
            "fallback": reason is not None, "fallback_reason": reason, "usage": usage.public()}


def _answer_messages(rt: Resources, step: StepContext,
                     inputs: RespondInputs) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    if inputs.session_id is not None:
        with rt.db.read() as session:
            recent = chats.recent_messages(
                session=session, tenant_id=step.tenant_id, session_id=inputs.session_id,
                limit=rt.settings.llm.history_turns, exclude_job=step.job_id)
        history = [{"role": m.role, "content": m.content} for m in recent
                   if m.role in ("user", "assistant")]
    outputs = "\n".join(f"step {r.index} {r.intent} ({r.why}): {planning.clip(r.output)}"
                        for r in inputs.results) or "(no steps ran)"
    system = ("You are a helpful assistant. Answer the user's request briefly, using the "
              f"results of the steps that ran for it:\n{outputs}")
    return [{"role": "system", "content": system}, *history,
            {"role": "user", "content": inputs.prompt}]


def _record_turn(rt: Resources, step: StepContext, inputs: RespondInputs, text: str) -> None:
    """Keep the steps' outputs (as tool messages) and the answer in the session."""
    if inputs.session_id is None:
        return
    turns = [chats.Turn("tool", planning.summary(r.intent, r.output),
                        {"index": r.index, "intent": r.intent, "output": r.output})
             for r in inputs.results]
    with rt.db.write() as session:
        chats.add_turns(session=session, tenant_id=step.tenant_id,
                        session_id=inputs.session_id, job_id=step.job_id,
                        turns=[*turns, chats.Turn("assistant", text)])

