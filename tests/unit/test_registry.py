"""The intent registry and submission planning."""

import dataclasses

import pytest
from pydantic import BaseModel

from api import service
from core import observations
from core.errors import IntentNotFound, InvalidRequest
from core.models import Effect
from core.settings import OrchestratorSettings, get_settings
from tasks import llm
from tasks.engine.registry import Intent, Registry, StaticProvider, exposed
from tasks.engine.resources import Resources
from tasks.intents import BUILTIN, REGISTRY

DEFAULT = OrchestratorSettings().exposed_intents
INTERNAL = ("llm.plan", "llm.respond", "debug.chain.link")


def request(intent: str, inputs: dict, mode: str = "auto") -> service.Request:
    return service.Request(tenant_id="t", intent=intent, inputs=inputs, mode=mode, context={},
                           callback_url=None, idempotency_key=None)


def test_unknown_intent_names_the_available_ones() -> None:
    # Given an intent name nobody registered
    # When it is looked up
    with pytest.raises(IntentNotFound) as raised:
        REGISTRY.get("nope")
    # Then the error carries the seed contract's text, and the names as a list
    assert str(raised.value) == f"Intent 'nope' not found. Available: {REGISTRY.names()}"
    assert "debug.echo" in raised.value.available


def test_an_intent_cannot_be_registered_twice() -> None:
    provider = StaticProvider()
    intent = Intent("x.y", "tools", "agent", BaseModel, "x", lambda _: None)
    provider.register(intent)
    with pytest.raises(ValueError, match="registered twice"):
        provider.register(intent)


def test_an_intent_needs_a_real_pool_and_mode() -> None:
    with pytest.raises(ValueError, match="unknown pool"):
        Intent("x.y", "gpu", "agent", BaseModel, "x", lambda _: None)


def test_providers_add_intents_per_tenant() -> None:
    # Given a provider whose intent only tenant "a" may use
    class PerTenant:
        prefix = "tool."

        def intents(self, tenant_id: str | None) -> list[Intent]:
            own = Intent("tool.mine", "tools", "agent", BaseModel, "x", lambda _: None)
            return [own] if tenant_id == "a" else []

    registry = Registry([BUILTIN, PerTenant()])
    # Then "a" sees it beside the built-in intents and "b" does not
    assert "tool.mine" in registry.names("a") and "debug.echo" in registry.names("a")
    assert "tool.mine" not in registry.names("b")
    with pytest.raises(IntentNotFound):
        registry.get("tool.mine", "b")


def test_chain_plans_one_step_per_link() -> None:
    planned = service.plan(request("debug.chain", {"steps": 4, "delay": 0.5}), exposed=["*"])
    inputs, steps = planned.inputs, planned.steps
    assert inputs == {"steps": 4, "delay": 0.5, "count": False, "fail_step": 0}
    assert [s.inputs["step"] for s in steps] == [1, 2, 3, 4]
    assert {(s.intent, s.pool) for s in steps} == {("debug.chain.link", "tools")}


def test_a_static_plan_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="more than the limit of 3"):
        service.plan(request("debug.chain", {"steps": 4}), exposed=["*"], max_steps=3)


def test_a_dangerous_intent_says_why_it_is_held() -> None:
    intent = REGISTRY.get("debug.hold")
    hold = intent.hold(intent.inputs.model_validate({"reason": "deletes things"}))
    assert intent.dangerous and hold is not None and hold.reason == "deletes things"
    assert REGISTRY.get("debug.echo").hold(REGISTRY.get("debug.echo").inputs()) is None


def test_invalid_inputs_name_the_field() -> None:
    with pytest.raises(InvalidRequest) as raised:
        service.plan(request("debug.sleep", {"seconds": 99999}), exposed=["*"])
    assert raised.value.field == "inputs.seconds"


def test_a_mode_other_than_the_intents_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="runs in mode 'agent'"):
        service.plan(request("debug.echo", {}, mode="flow"), exposed=["*"])


def test_default_idempotency_key_ignores_key_order_but_not_values() -> None:
    key = service.default_idempotency_key
    assert key("t", "i", {"a": 1, "b": 2}) == key("t", "i", {"b": 2, "a": 1})
    assert key("t", "i", {"a": 1}) != key("t", "i", {"a": 2})
    assert key("t", "i", {"a": 1}) != key("u", "i", {"a": 1})


@pytest.mark.parametrize(("wait", "expected"), [(False, 0.0), (True, 8.0), (3, 3.0), (60, 8.0),
                                                (-1, 0.0)])
def test_wait_is_clamped_to_the_sync_timeout(wait: float | bool, expected: float) -> None:
    assert service.clamp_wait(wait, 8.0) == expected


SCHEMA = {"type": "object", "properties": {
    "to": {"type": "string", "format": "email"},
    "labels": {"type": "array", "items": {"type": "string"}}},
    "required": ["to"], "additionalProperties": False}


def schema_intent() -> Intent:
    from tasks.engine.registry import JsonInputs

    return Intent("flow.x", "flow", "flow", JsonInputs, "x", lambda _: None, json_schema=SCHEMA)


def test_an_intent_with_a_json_schema_lists_it_and_keeps_valid_inputs_as_given() -> None:
    intent = schema_intent()
    assert intent.schema() == SCHEMA
    assert intent.validate({"to": "a@b.c", "labels": ["x"]}).model_dump() == {
        "to": "a@b.c", "labels": ["x"]}


@pytest.mark.parametrize(("inputs", "field", "message"), [
    ({}, "inputs", "'to' is a required property"),
    ({"to": "a@b.c", "labels": ["x", 3]}, "inputs.labels.1", "3 is not of type 'string'"),
    ({"to": "a@b.c", "cc": "x"}, "inputs", "Additional properties are not allowed"),
], ids=["missing", "nested-type", "extra"])
def test_json_schema_errors_name_the_field(inputs: dict, field: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        schema_intent().validate(inputs)
    assert raised.value.field == field and message in str(raised.value)
    assert str(raised.value).startswith(f"{field}: ")


@pytest.mark.parametrize(("intent", "label"), [
    ("debug.echo", "debug.echo"), ("agent.my-secret-bot", "agent.*"),
    ("tool.acme_crm", "tool.*"), ("mcp.time.get_current_time", "mcp.time.get_current_time")])
def test_tenant_defined_intents_count_under_their_family(intent: str, label: str) -> None:
    assert observations.metric_intent(intent) == label


@pytest.mark.parametrize(("name", "patterns", "shown"), [
    ("memory.search", DEFAULT, True), ("debug.echo", DEFAULT, False),
    ("debug.echo", ["*"], True), ("mcp.time.x", ["memory.*"], False),
    ("debug.echo", ["!debug.*", "debug.echo"], True), ("tool.x", [], False)],
    ids=["default-shows", "default-hides-debug", "all", "not-matched", "last-match-wins",
         "none"])
def test_exposed_patterns_decide_what_is_offered(name: str, patterns: list[str],
                                                 shown: bool) -> None:
    assert exposed(name, patterns) is shown


@pytest.mark.parametrize("name", INTERNAL)
def test_an_internal_step_is_never_offered_and_submitting_it_is_unknown(name: str) -> None:
    # Given everything exposed
    # When the tenant lists and submits
    offered = [i.name for i in REGISTRY.offered("t", ["*"])]
    # Then the internal step is neither listed nor submittable, yet the engine still finds it
    assert name not in offered and "debug.echo" in offered
    with pytest.raises(IntentNotFound) as raised:
        service.plan(request(name, {"prompt": "hi"}), exposed=["*"])
    assert name not in raised.value.available
    assert REGISTRY.get(name).internal


def test_debug_intents_are_hidden_by_default() -> None:
    with pytest.raises(IntentNotFound) as raised:
        service.plan(request("debug.echo", {}), exposed=DEFAULT)
    assert "memory.search" in raised.value.available
    assert not any(name.startswith("debug.") for name in raised.value.available)


def test_a_prompt_runs_its_internal_planner() -> None:
    prompt = service.Request(tenant_id="t", intent="llm.plan", inputs={"prompt": "hi"},
                             mode="auto", context={}, callback_url=None, idempotency_key=None,
                             internal=True)
    assert service.plan(prompt, exposed=DEFAULT).intent.name == "llm.plan"


@pytest.mark.parametrize(("intent", "inputs", "effect"), [
    ("memory.search", {"query": "tea"}, Effect.read),
    ("memory.write", {"text": "tea"}, Effect.write),
    ("http.request", {"url": "https://example.org"}, Effect.read),
    ("http.request", {"method": "HEAD", "url": "https://example.org"}, Effect.read),
    ("http.request", {"method": "POST", "url": "https://example.org"}, Effect.write),
    ("debug.echo", {}, Effect.write)],
    ids=["search", "write", "get", "head", "post", "default"])
def test_reads_are_not_deduplicated_by_default_writes_are(intent: str, inputs: dict,
                                                          effect: Effect) -> None:
    planned = service.plan(request(intent, inputs), exposed=["*"])
    assert planned.effect is effect
    key = service.idempotency_key(request(intent, inputs), planned)
    assert (key is None) is (effect is Effect.read)
    keyed = request(intent, inputs)
    keyed.idempotency_key = "mine"
    assert service.idempotency_key(keyed, planned) == "mine"


def test_ssh_effects_and_destructive_intents() -> None:
    assert REGISTRY.get("ssh.exec.peek").effect is Effect.read
    assert {i.name for i in REGISTRY.all() if i.destructive} == {"memory.delete", "ssh.exec"}


def _planner_sees(registry_resources: Resources, **llm_settings: object) -> set[str]:
    settings = get_settings()
    rt = dataclasses.replace(registry_resources, settings=settings.model_copy(update={
        "llm": settings.llm.model_copy(update=llm_settings),
        "orchestrator": settings.orchestrator.model_copy(update={"exposed_intents": DEFAULT})}))
    return {i.name for i in llm._plannable(rt, "t")}


def test_the_planner_is_offered_neither_hidden_internal_nor_destructive_intents(
        registry_resources: Resources) -> None:
    # Given the default settings
    seen = _planner_sees(registry_resources)
    # Then it plans with reads and writes the tenant sees, nothing destructive or internal
    assert {"memory.search", "memory.write", "ssh.exec.peek", "http.request"} <= seen
    assert not seen & {"memory.delete", "ssh.exec", "debug.echo", *INTERNAL}
    # And LLM_PLAN_DESTRUCTIVE lets the destructive ones in
    assert {"memory.delete", "ssh.exec"} <= _planner_sees(registry_resources,
                                                           plan_destructive=True)
