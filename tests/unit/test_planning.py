"""The plan's shape and checks, the rule-based planner, and the per-job usage sum."""

import json
from typing import Any

import pytest

from adapters.llm import Usage, price
from api.schemas import JobCreate, total_usage
from core.models import PoolName
from core.settings import LlmSettings
from core.store.tables import NewStep
from tasks import fallback, llm, planning
from tasks.engine.context import StepContext
from tasks.intents import REGISTRY

NAMES = {"debug.echo", "debug.sleep"}


def test_a_valid_plan_parses_even_in_a_code_fence() -> None:
    text = '```json\n{"steps": [{"intent": "debug.echo", "inputs": {"a": 1}, "why": "x"}]}\n```'
    assert planning.parse(text, NAMES, 8).steps[0].inputs == {"a": 1}


@pytest.mark.parametrize(("text", "error"), [
    ("sure!", "not a plan of the required shape"),
    ('{"steps": [{"inputs": {}}]}', "steps.0.intent: Field required"),
    ('{"steps": [{"intent": "llm.plan"}]}', "Intent 'llm.plan' not found"),
    ('{"steps": [{"intent": "debug.echo"}, {"intent": "debug.echo"}]}', "more than 1"),
], ids=["not-json", "no-intent", "not-allowed", "too-long"])
def test_an_invalid_plan_says_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(planning.PlanError, match=error):
        planning.parse(text, NAMES | {"x"}, 1)


def test_a_reference_must_name_an_earlier_step() -> None:
    # Given a plan whose steps start at 1: step 1 may not refer to itself
    plan = planning.Plan.model_validate({"steps": [
        {"intent": "debug.echo", "inputs": {"x": {"$ref": "steps.1.output.a"}}}]})
    with pytest.raises(planning.PlanError, match="must name an earlier step"):
        planning.check_refs(plan, 1)
    planning.check_refs(planning.Plan.model_validate({"steps": [
        {"intent": "debug.echo", "inputs": {"x": {"$ref": "steps.0.output"}}}]}), 1)


def test_the_planner_never_sees_llm_intents_and_honours_the_patterns() -> None:
    names = [i.name for i in planning.plannable(REGISTRY.all(), ["*"])]
    assert "debug.echo" in names and not any(n.startswith("llm.") for n in names)
    assert [i.name for i in planning.plannable(REGISTRY.all(), ["debug.e*"])] == ["debug.echo"]
    schema = planning.schema(["debug.echo"], 3)
    assert schema["properties"]["steps"]["maxItems"] == 3


def test_the_prompt_lists_each_intent_with_its_inputs() -> None:
    line = planning.describe(REGISTRY.get("debug.sleep"))
    assert line.startswith("- debug.sleep: ") and "seconds: number? (Seconds to sleep.)" in line


@pytest.mark.parametrize(("prompt", "intent", "inputs"), [
    ("search for recent SSH attacks", "memory.search",
     {"query": "recent SSH attacks", "k": 5, "namespace": "ns"}),
    ("Recall what Bob said", "memory.search", {"query": "what Bob said", "k": 5,
                                               "namespace": "ns"}),
    ("remember that the door code is 42", "memory.write",
     {"text": "the door code is 42", "namespace": "ns"}),
    ("check disk usage on web-1", "ssh.exec.peek", {"host": "web-1", "command": "disk usage"}),
    ("Search my notes: when does the nightly backup run?", "memory.search",
     {"query": "when does the nightly backup run", "k": 5, "namespace": "ns"}),
    ("When does the nightly backup run?", "memory.search",
     {"query": "When does the nightly backup run", "k": 5, "namespace": "ns"}),
], ids=["search", "recall", "remember", "run-on-host", "search-my-notes", "question"])
def test_the_rule_based_planner_maps_common_requests(prompt: str, intent: str,
                                                     inputs: dict[str, object]) -> None:
    chosen = fallback.plan(prompt, {"memory.search", "memory.write", "ssh.exec.peek"}, "ns")
    assert [(s.intent, s.inputs) for s in chosen.steps] == [(intent, inputs)]


def test_without_the_intents_the_rule_based_planner_says_what_is_missing() -> None:
    assert "no `memory.search` intent" in fallback.plan("find my notes", set(), None).note
    assert fallback.plan("tell me a joke", {"memory.search"}, None).steps == []
    text = fallback.answer("no model is configured", "", ["Found no notes"])
    assert text == ("The rule-based planner answered because no model is configured. "
                    "Found no notes.")


def test_usage_is_priced_per_model_and_summed_per_job() -> None:
    assert price({"m": {"prompt": 1.0, "completion": 2.0}}, "m", 1000, 500) == pytest.approx(
        0.002)
    one = Usage("m", 10, 5, 0.5, 1.0, 1).public()
    total = total_usage([{"usage": one}, {"usage": one}, {"x": 1}, None])
    assert total is not None
    assert (total["total_tokens"], total["cost"], total["calls"], total["models"]) == (
        30, 1.0, 2, ["m"])
    assert total_usage([{"x": 1}]) is None


def test_reference_000_and_002_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    monkeypatch.setenv("OPENROUTER_URL", "https://openrouter.ai/api/v1/chat/completions")
    monkeypatch.setenv("LLM_DEFAULT_MODEL", "m")
    settings = LlmSettings()
    assert (settings.api_key, settings.base_url, settings.model, settings.enabled) == (
        "k", "https://openrouter.ai/api/v1", "m", True)


def test_a_job_is_an_intent_or_a_prompt() -> None:
    assert JobCreate(prompt="hi", inputs={"session_id": "s"}).target() == (
        "llm.plan", {"session_id": "s", "prompt": "hi"})
    for body in ({}, {"intent": "debug.echo", "prompt": "hi"}):
        with pytest.raises(ValueError, match="either `intent` or `prompt`"):
            JobCreate.model_validate(body)
    assert json.loads(JobCreate(intent="debug.echo").model_dump_json())["prompt"] is None


def _context(prompt: llm.PromptInputs) -> StepContext:
    def plan_step(name: str, inputs: dict[str, Any]) -> NewStep:
        return NewStep(name, PoolName.tools, inputs)

    return StepContext(job_id="j", index=0, tenant_id="t", intent="llm.plan", inputs=prompt,
                       deadline=0.0, is_cancelled=lambda: False, issue_resume_url=lambda: "",
                       plan_step=plan_step, emit=lambda *_: None,
                       resources=None)  # type: ignore[arg-type]


PLANNED = [planning.PlannedStep(intent="memory.search", inputs={"query": "old"}),
           planning.PlannedStep(intent="memory.delete", inputs={
               "item_ids": {"$ref": "steps.1.output.results"}})]


@pytest.mark.parametrize(("review", "steps", "held"), [
    pytest.param(False, PLANNED[:1], False, id="a-read-runs-at-once"),
    pytest.param(True, PLANNED[:1], True, id="review-asked-for"),
    pytest.param(False, PLANNED, True, id="a-destructive-step-is-never-unreviewed"),
])
def test_a_plan_is_held_for_review_when_asked_or_destructive(
        review: bool, steps: list[planning.PlannedStep], held: bool) -> None:
    prompt = llm.PromptInputs(prompt="clean up my old notes", review=review)
    grown = llm._grow(_context(prompt), "llm", steps, Usage())
    intents = [s.intent for s in grown.steps]
    assert (intents[0] == llm.REVIEW_INTENT) is held
    if held and len(steps) == 2:
        # the delete's reference to the search moved with it, past the review step
        assert grown.steps[2].inputs["item_ids"] == {"$ref": "steps.2.output.results"}
        assert grown.steps[0].inputs["steps"][1]["intent"] == "memory.delete"
