"""The `llm` pool's intents: `llm.plan` turns a prompt into steps, `llm.respond` answers.

`llm.plan` asks the model for a plan (the tenant's intents, the session's recent turns), checks
every step against the registry (one repair round with the error), records it as an event and
grows the job with it and a final `llm.respond`. Without a model, or with its breaker open, the
rule-based planner (`tasks/fallback.py`) plans instead, and the answer says so.
"""

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from adapters.llm import Usage, estimate
from core import refs
from core.errors import (
    BudgetExhausted,
    IntentNotFound,
    InvalidRequest,
    UpstreamError,
    UpstreamUnavailable,
)
from core.models import EventType, PoolName
from core.store import limits
from core.store import sessions as chats
from core.store.tables import NewStep
from tasks import answers, budget, fallback, planning
from tasks.engine.context import Extend, Hold, StepContext
from tasks.engine.registry import REGISTRY
from tasks.engine.resources import Resources

PLAN_ROUNDS = 2
REVIEW_INTENT = "llm.review"
REPAIR_CHARS = 600  # the invalid plan echoed in the repair round (REPAIR_TOKENS holds it)
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
    review: bool = Field(False, description=(
        "Hold the whole plan for approval before any of its steps runs (one token bound to "
        "the exact plan: approve or reject it at /v1/jobs/{id}/approve or /reject)."))


class ReviewInputs(BaseModel):
    """A plan held for a person's review before it runs: the exact steps it will run."""

    steps: list[dict[str, Any]] = Field(description="The planned steps: intent, inputs, why.")


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


def unavailable(exc: UpstreamError | UpstreamUnavailable, timeout: float) -> str:
    """Why the model could not be used, in plain words (the details are in the logs)."""
    if isinstance(exc, UpstreamUnavailable):
        return "the model is unavailable (its circuit breaker is open after repeated failures)"
    if exc.status is not None:
        return f"the model's server answered with an error (HTTP {exc.status})"
    if "timeout" in str(exc).lower() or "timed out" in str(exc).lower():
        return f"the model did not answer within {timeout:g} seconds"
    return "the model's server could not be reached"


SMALL_PROMPT = 256  # tokens (estimated) below which a request fits any model worth asking


def check_fits(rt: Resources, prompt: str) -> None:
    """Refuse (InvalidRequest) a prompt that cannot fit the model's context even alone, with
    no intents and no history; a short one is not measured (no call to the server)."""
    if not rt.settings.llm.enabled:
        return
    alone = planning.messages(prompt, [], [], 1, rt.settings.llm.max_plan_steps, compact=True)
    if budget.measure(alone, estimate) <= SMALL_PROMPT:
        return
    context = rt.llm.context_tokens()
    limit = budget.plan_budget(context, rt.settings.llm.max_tokens)
    if budget.measure(alone, estimate) > limit and (
            need := budget.measure(alone, rt.llm.count)) > limit:
        raise InvalidRequest(
            f"prompt: about {need} tokens with the planner's rules, more than the {limit} a "
            f"plan may use in the model's context of {context} tokens (LLM_CONTEXT_TOKENS, "
            f"less LLM_MAX_TOKENS and room for a repair round); shorten it", field="prompt")


# --- llm.plan --------------------------------------------------------------------------------


def plan(step: StepContext) -> Extend:
    """Plan the prompt with the model, or by rule without one; grow the job with the plan."""
    assert isinstance(step.inputs, PromptInputs)
    rt, inputs = step.resources, step.inputs
    history, recent = _open_session(rt, step, inputs)
    intents = _plannable(rt, step.tenant_id)
    reason, usage, prompt = NO_MODEL, Usage(), dict[str, Any]()
    if rt.settings.llm.enabled:
        try:
            req = budget.Request(inputs.prompt, history, intents, recent, step.index + 1,
                                 rt.settings.llm.max_plan_steps)
            steps = _model_plan(rt, step, req, usage, prompt)
            return _grow(step, "llm", steps, usage, prompt=prompt)
        except (budget.PromptTooLong, PlanRejected, BudgetExhausted) as exc:
            reason = str(exc)
        except (UpstreamError, UpstreamUnavailable) as exc:
            reason = unavailable(exc, rt.settings.llm.timeout)
    chosen = fallback.plan(inputs.prompt, {i.name for i in intents}, inputs.namespace)
    try:
        return _grow(step, "rule-based", chosen.steps, usage, reason, chosen.note, prompt)
    except (IntentNotFound, InvalidRequest) as exc:
        return _grow(step, "rule-based", [], usage, reason, f"It could not plan: {exc}", prompt)


def _open_session(rt: Resources, step: StepContext,
                  inputs: PromptInputs) -> tuple[list[tuple[str, str]], set[str]]:
    """Keep the user's message in its session; return the session's earlier turns and the
    intents its recent steps used."""
    if inputs.session_id is None:
        return [], set()
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
        used = {str(m.data["intent"]) for m in recent
                if m.role == "tool" and isinstance(m.data, dict) and m.data.get("intent")}
        return [(m.role, m.content) for m in recent if m.role in ("user", "assistant")], used


def _plannable(rt: Resources, tenant_id: str) -> list[Any]:
    """What the planner is offered: what the tenant is (never internal steps), destructive
    intents only when LLM_PLAN_DESTRUCTIVE allows, within LLM_PLAN_INTENTS."""
    offered = REGISTRY.offered(tenant_id, rt.settings.orchestrator.exposed_intents)
    allowed = [i for i in offered if rt.settings.llm.plan_destructive or not i.destructive]
    return planning.plannable(allowed, rt.settings.llm.plan_intents)


def _model_plan(rt: Resources, step: StepContext, req: budget.Request, usage: Usage,
                prompt: dict[str, Any]) -> list[planning.PlannedStep]:
    """Ask the model for a plan within its context; one more round with the error if it is
    invalid. `usage` gathers every call, those that failed too; `prompt` what was offered and
    each call's prompt tokens as the server measured them."""
    limit = budget.plan_budget(rt.llm.context_tokens(), rt.settings.llm.max_tokens)
    fitted = budget.fit_plan(req, limit, rt.llm.count)
    prompt.update(fitted.public(len(req.intents)), measured=[])
    names = [i.name for i in fitted.offered]
    messages, answer, error = list(fitted.messages), "", ""
    for _ in range(PLAN_ROUNDS):
        answer = _complete(rt, step.tenant_id, usage, messages,
                           planning.schema(names, req.most), prompt["measured"])
        try:
            plan = planning.parse(answer, set(names), req.most)
            planning.check_refs(plan, req.first)
            for planned in plan.steps:
                step.plan_step(planned.intent, planned.inputs)
            return plan.steps
        except (planning.PlanError, IntentNotFound, InvalidRequest) as exc:
            error = str(exc)
        messages = [*fitted.messages, {"role": "assistant", "content": answer[:REPAIR_CHARS]},
                    {"role": "user", "content": f"That plan is invalid: {error[:300]}. Answer "
                                                "with a corrected plan, as the JSON object only."}]
    step.emit(EventType.plan_rejected, {"plan": answer[:4000], "error": error,
                                "usage": usage.public()})
    brief = error.split(";")[0].split(". Available")[0][:120]
    if error.startswith(planning.NOT_A_PLAN):  # a JSON parser's words mean nothing to a user
        brief = "its answer was cut off or was not a plan in the required JSON shape"
    raise PlanRejected(f"the model did not give a usable plan in {PLAN_ROUNDS} tries ({brief})")


def _complete(rt: Resources, tenant_id: str, usage: Usage, messages: list[dict[str, Any]],
              schema: dict[str, Any], measured: list[int]) -> str:
    """One plan call, within the tenant's budget; a call that failed still counts, with the
    seconds it took."""
    refusal = budget_refusal(rt, tenant_id, usage)
    if refusal is not None:
        raise BudgetExhausted(refusal)
    started = time.perf_counter()
    try:
        completion = rt.llm.complete_json(messages, schema)
    except UpstreamError:
        usage.add(Usage(rt.settings.llm.model, model_seconds=time.perf_counter() - started,
                        calls=1))
        raise
    usage.add(completion.usage)
    measured.append(completion.usage.prompt_tokens)
    return completion.text


def budget_refusal(rt: Resources, tenant_id: str, usage: Usage) -> str | None:
    """Why the tenant may not call the model now (its budget is spent, counting this step's
    calls so far), or None."""
    with rt.db.read() as session:
        return limits.budget_refusal(
            session=session, tenant_id=tenant_id, default=limits.default_budget(
                rt.settings.limits),
            pending=(usage.prompt_tokens + usage.completion_tokens, usage.cost))


def _reviewed(step: StepContext, steps: list[planning.PlannedStep]) -> bool:
    """Whether the plan waits for a person: asked for, or it holds a destructive step (which the
    planner may plan only with LLM_PLAN_DESTRUCTIVE, and then never runs unapproved)."""
    assert isinstance(step.inputs, PromptInputs)
    destructive = any(REGISTRY.get(s.intent, step.tenant_id).destructive for s in steps)
    return bool(steps) and (step.inputs.review or destructive)


def _review(steps: list[planning.PlannedStep]) -> NewStep:
    """The step that holds the plan for a person (its token is bound to these exact steps)."""
    shown = ReviewInputs(steps=[{"intent": s.intent, "inputs": s.inputs, "why": s.why}
                                for s in steps])
    return NewStep(REVIEW_INTENT, PoolName.llm, shown.model_dump(mode="json"))


def review_hold(inputs: ReviewInputs) -> Hold:
    """Why `llm.review` waits: the plan, step by step."""
    listed = "; ".join(f"{n + 1}. {s['intent']}" for n, s in enumerate(inputs.steps))
    return Hold(f"review the plan before it runs ({len(inputs.steps)} steps: {listed})")


def reviewed(step: StepContext) -> dict[str, Any]:
    """Runs once the plan was approved: the planned steps follow."""
    assert isinstance(step.inputs, ReviewInputs)
    return {"approved": True, "steps": len(step.inputs.steps)}


def _grow(step: StepContext, planner: Planner, steps: list[planning.PlannedStep], usage: Usage,
          reason: str | None = None, note: str = "",
          prompt: dict[str, Any] | None = None) -> Extend:
    """The plan step's output and the steps it adds: the review (when asked for), the planned
    ones, then the answer."""
    assert isinstance(step.inputs, PromptInputs)
    review = _reviewed(step, steps)
    first = step.index + 1 + review
    if review:  # the review step goes first: the planned steps' references move with them
        steps = [s.model_copy(update={"inputs": refs.shift(s.inputs, step.index + 1, 1)})
                 for s in steps]
    new = ([_review(steps)] if review else []) + [step.plan_step(s.intent, s.inputs)
                                                  for s in steps]
    results = [StepResult(index=first + n, intent=s.intent, why=s.why,
                          output={"$ref": f"steps.{first + n}.output"})
               for n, s in enumerate(steps)]
    respond = RespondInputs(prompt=step.inputs.prompt, session_id=step.inputs.session_id,
                            planner=planner, fallback_reason=reason, note=note, results=results)
    new.append(NewStep("llm.respond", PoolName.llm, respond.model_dump(mode="json")))
    shown = [s.model_dump() for s in steps]
    output = {"planner": planner, "fallback": planner != "llm", "fallback_reason": reason,
              "steps": shown, "usage": usage.public(), "prompt": prompt or None}
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
    findings = [(r.intent, answers.found(r.intent, r.output)) for r in inputs.results]
    text = None
    if inputs.planner == "llm" and rt.settings.llm.enabled:
        text, reason = _model_answer(rt, step, inputs, findings, usage)
    if text is None:
        reason = reason or NO_MODEL
        text = fallback.answer(reason, inputs.note, [found for _, found in findings])
    actions = [planning.summary(r.intent, r.output) for r in inputs.results]
    _record_turn(rt, step, inputs, text)
    return {"response": text, "actions": actions, "planner": inputs.planner,
            "fallback": reason is not None, "fallback_reason": reason, "usage": usage.public()}


def _model_answer(rt: Resources, step: StepContext, inputs: RespondInputs,
                  findings: list[tuple[str, str]], usage: Usage) -> tuple[str | None, str | None]:
    """The model's answer streamed as deltas, ending with what it used; or None and why not."""
    refusal = budget_refusal(rt, step.tenant_id, usage)
    if refusal is not None:
        return None, refusal
    deltas, started = Deltas(step), time.perf_counter()
    try:
        messages = _answer_messages(rt, step, inputs, findings)
        completion = rt.llm.stream(messages, deltas.add)
    except budget.PromptTooLong as exc:
        return None, str(exc)
    except (UpstreamError, UpstreamUnavailable) as exc:
        if isinstance(exc, UpstreamError):
            usage.add(Usage(rt.settings.llm.model,
                            model_seconds=time.perf_counter() - started, calls=1))
        deltas.flush()
        return None, unavailable(exc, rt.settings.llm.timeout)
    usage.add(completion.usage)
    used = "; ".join(found for _, found in findings)
    sources = f"\n\nUsed: {used}." if used else ""
    deltas.add(sources)
    deltas.flush()
    return completion.text + sources, None


def _answer_messages(rt: Resources, step: StepContext, inputs: RespondInputs,
                     findings: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The answering conversation within the model's context: what the steps found (their
    raw outputs too while they fit), recent turns (cut first), then the request."""
    history: list[dict[str, Any]] = []
    if inputs.session_id is not None:
        with rt.db.read() as session:
            recent = chats.recent_messages(
                session=session, tenant_id=step.tenant_id, session_id=inputs.session_id,
                limit=rt.settings.llm.history_turns, exclude_job=step.job_id)
        history = [{"role": m.role, "content": m.content} for m in recent
                   if m.role in ("user", "assistant")]
    limit = int(rt.llm.context_tokens() * (1 - budget.MARGIN)) - rt.settings.llm.max_tokens
    found = "\n".join(f"step {r.index} {r.intent} ({r.why}): {text}"
                       for r, (_, text) in zip(inputs.results, findings, strict=True))
    raw = "\n".join(f"step {r.index} output: {planning.clip(r.output)}" for r in inputs.results)
    for outputs in (f"{found}\n{raw}", found):
        for cut in range(len(history) + 1):
            messages = _answer_conversation(inputs.prompt, outputs or "(no steps ran)",
                                            history[cut:])
            if budget.measure(messages, rt.llm.count) <= limit:
                return messages
    raise budget.PromptTooLong("the request and what its steps found are too long for the "
                               f"model's context ({limit} tokens for an answer)")


def _answer_conversation(prompt: str, outputs: str,
                         history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    system = ("You are a helpful assistant. Answer the user's request briefly, using what the "
              f"steps that ran for it found:\n{outputs}")
    return [{"role": "system", "content": system}, *history, {"role": "user", "content": prompt}]


def _record_turn(rt: Resources, step: StepContext, inputs: RespondInputs, text: str) -> None:
    """Keep the steps' outputs (as tool messages) and the answer in the session."""
    if inputs.session_id is None:
        return
    turns = [chats.Turn("tool", answers.found(r.intent, r.output),
                        {"index": r.index, "intent": r.intent, "output": r.output})
             for r in inputs.results]
    with rt.db.write() as session:
        chats.add_turns(session=session, tenant_id=step.tenant_id,
                        session_id=inputs.session_id, job_id=step.job_id,
                        turns=[*turns, chats.Turn("assistant", text)])

