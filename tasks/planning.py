"""A plan as the model writes it: its JSON schema, the planning prompt, and its checks.

Pure functions: the `llm.plan` step calls them with the model's answers and the registry.
"""

import json
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from core import refs
from tasks.engine.registry import Intent

NEVER_PLANNED = ("llm.*",)
OUTPUT_CHARS = 4000
NOT_A_PLAN = "not a plan of the required shape"
SYSTEM = """You are the planner of a task orchestrator. Turn the user's request into a plan: a \
JSON object {{"steps": [{{"intent": ..., "inputs": {{...}}, "why": ...}}]}} using only the \
intents listed below, with inputs that match their schema. Use no step when the request is \
conversation alone: a final answer step is always added after your steps and sees their \
outputs. Your steps are numbered from {first}: a step may use an earlier step's output with \
{{"$ref": "steps.N.output.KEY"}} as an input value. At most {most} steps. Answer with the \
JSON object only.

Intents:
{intents}"""


class PlanError(ValueError):
    """Raised when a model's plan is not valid JSON of the plan's shape, or breaks a rule."""


class PlannedStep(BaseModel):
    """One step of a model's plan."""

    intent: str = Field(min_length=1, max_length=200)
    inputs: dict[str, Any] = Field(default_factory=dict)
    why: str = Field("", max_length=1000)


class Plan(BaseModel):
    """A model's plan: the steps before the answer."""

    steps: list[PlannedStep] = Field(default_factory=list)


def plannable(intents: list[Intent], patterns: list[str]) -> list[Intent]:
    """The intents the planner may use: matching `patterns`, never `llm.*`."""
    def allowed(name: str) -> bool:
        return (any(fnmatchcase(name, p) for p in patterns)
                and not any(fnmatchcase(name, p) for p in NEVER_PLANNED))
    return [intent for intent in intents if allowed(intent.name)]


def schema(names: list[str], most: int) -> dict[str, Any]:
    """The JSON schema of a plan over these intent names (for `response_format`)."""
    step = {"type": "object", "properties": {
        "intent": {"type": "string", "enum": names} if names else {"type": "string"},
        "inputs": {"type": "object"},
        "why": {"type": "string", "maxLength": 200}},
        "required": ["intent", "inputs", "why"]}
    return {"type": "object", "properties": {
        "steps": {"type": "array", "items": step, "maxItems": most}}, "required": ["steps"]}


def _field(name: str, spec: dict[str, Any], required: bool) -> str:
    kinds = spec.get("type") or "|".join(str(s.get("type", "any")) for s in spec.get("anyOf", []))
    text = f"{name}: {kinds or 'any'}{'' if required else '?'}"
    return f"{text} ({spec['description']})" if spec.get("description") else text


def describe(intent: Intent) -> str:
    """One line for the planning prompt: name, description and input fields."""
    body = intent.schema()
    required = set(body.get("required", []))
    fields = [_field(name, spec, name in required)
              for name, spec in body.get("properties", {}).items()]
    extra = " (any fields)" if body.get("additionalProperties", False) is not False else ""
    return f"- {intent.name}: {intent.description} Inputs: {{{'; '.join(fields)}}}{extra}"


TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool",
         "array": "list", "object": "dict", "null": "None"}
SUMMARY_CHARS = 90


def _kind(spec: dict[str, Any]) -> str:
    kinds = [spec.get("type")] if spec.get("type") else [s.get("type") for s in
                                                          spec.get("anyOf", [])]
    named = [TYPES.get(str(k), str(k)) for k in kinds if k and k != "null"]
    return "|".join(named) or "any"


def signature(intent: Intent) -> str:
    """One compact line: `- memory.search(query: str, k?: int): Search a namespace…`."""
    body = intent.schema()
    required = set(body.get("required", []))
    fields = [f"{name}{'' if name in required else '?'}: {_kind(spec)}"
              for name, spec in body.get("properties", {}).items()]
    if body.get("additionalProperties", False) is not False:
        fields.append("...")
    first = intent.description.split(". ")[0].rstrip(".")
    if len(first) > SUMMARY_CHARS:
        first = first[:SUMMARY_CHARS - 1] + "…"
    return f"- {intent.name}({', '.join(fields)}): {first}"


def messages(prompt: str, history: list[tuple[str, str]], intents: list[Intent], first: int,
             most: int, compact: bool = False) -> list[dict[str, Any]]:
    """The planning conversation: the rules and intents (full lines, or compact signatures),
    recent turns, then the request."""
    line = signature if compact else describe
    system = SYSTEM.format(first=first, most=most,
                           intents="\n".join(line(i) for i in intents) or "(none)")
    turns = [{"role": "user" if role == "user" else "assistant", "content": text}
             for role, text in history]
    return [{"role": "system", "content": system}, *turns, {"role": "user", "content": prompt}]


def parse(text: str, allowed: set[str], most: int) -> Plan:
    """The plan in a model's answer; PlanError says what is wrong with it."""
    try:
        plan = Plan.model_validate(_json(text))
    except (ValueError, ValidationError) as exc:
        raise PlanError(f"{NOT_A_PLAN}: {_first_error(exc)}") from exc
    if len(plan.steps) > most:
        raise PlanError(f"the plan has {len(plan.steps)} steps, more than {most}")
    for step in plan.steps:
        if step.intent not in allowed:
            raise PlanError(f"Intent '{step.intent}' not found; use one of {sorted(allowed)}")
    return plan


def _json(text: str) -> Any:
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    return json.loads(body)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'plan'}: {first['msg']}"
    return str(exc)


def check_refs(plan: Plan, first: int) -> None:
    """Every step reference must name a step before the one that holds it."""
    for n, step in enumerate(plan.steps):
        for path in _ref_paths(step.inputs):
            parts = path.split(".") if isinstance(path, str) else []
            if len(parts) < 3 or not parts[1].isdigit() or not int(parts[1]) < first + n:
                raise PlanError(f"step {first + n} ({step.intent}): the reference {path!r} "
                                "must name an earlier step, as 'steps.N.output.KEY'")


def _ref_paths(value: Any) -> list[Any]:
    if isinstance(value, dict):
        if refs.REF in value:
            return [value[refs.REF]]
        return [p for item in value.values() for p in _ref_paths(item)]
    if isinstance(value, list):
        return [p for item in value for p in _ref_paths(item)]
    return []


def summary(intent: str, output: Any) -> str:
    """What a step did, in a few words (the chat contracts' `actions_taken`)."""
    if isinstance(output, dict) and isinstance(output.get("results"), list):
        return f"{intent}: {len(output['results'])} results"
    return f"{intent}: done"


def clip(value: Any) -> str:
    """A step output as prompt text, cut to a size a model can take."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= OUTPUT_CHARS else text[:OUTPUT_CHARS] + "…(cut)"
