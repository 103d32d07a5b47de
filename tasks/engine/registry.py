"""The intent registry: every intent a tenant may use, gathered from providers.

An intent names its pool, mode, input model, handler, whether it is dangerous (and when it
must be held for approval), its timeout and how it plans its steps. Providers supply them:
the static intents here; flows from settings, MCP tools discovered at worker start and
per-tenant tools and agents plug in the same way.
"""

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Protocol

from jsonschema.protocols import Validator
from pydantic import BaseModel, ConfigDict, ValidationError

from core import jsonschemas
from core.errors import IntentNotFound, InvalidRequest
from core.models import Effect
from core.store.tables import NewStep
from tasks.engine.context import Hold, StepContext
from tasks.engine.pools import POOLS

if TYPE_CHECKING:
    from tasks.engine.resources import Resources

MODES = ("agent", "flow", "mcp")
Handler = Callable[[StepContext], Any]


class JsonInputs(BaseModel):
    """Inputs checked against a JSON schema (flows, MCP and HTTP tools): kept as given."""

    model_config = ConfigDict(extra="allow")


def _path(prefix: str, parts: Iterable[Any]) -> str:
    return ".".join([prefix, *(str(part) for part in parts)])


def _pydantic_error(exc: ValidationError, prefix: str) -> InvalidRequest:
    first = exc.errors()[0]
    field = _path(prefix, first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return InvalidRequest(f"{field}: {message}", field=field)


def _schema_error(checker: Validator, raw: dict[str, Any],
                  prefix: str) -> InvalidRequest | None:
    error = jsonschemas.first_error(checker, raw)
    if error is None:
        return None
    field = _path(prefix, error.absolute_path)
    return InvalidRequest(f"{field}: {error.message}", field=field)


@dataclass(frozen=True)
class Intent:
    """A registered intent: where and how its steps run.

    `literal_inputs`: step references in its inputs are data, not resolved (a planner's inputs
    are steps for later, whose references are resolved when those steps start).
    `json_schema`: inputs are checked against this JSON schema (an intent defined outside the
    code: a flow, an MCP tool, an HTTP tool) and kept as given, in a `JsonInputs`.
    `precheck`: raises InvalidRequest when the intent cannot run now (its engine is not
    configured), so a submission is refused with the reason instead of failing later.
    `access`: raises NotFound when the tenant may not use what the inputs name (an SSH host not
    granted to it), checked at submit and again when the step starts.
    `context`: handed to the input model's validators (settings a rule depends on, such as
    `ssh.exec.peek`'s allowed paths), so no validator reads a global.
    `effect`: `read` or `write` (what the default idempotency key deduplicates); `effect_of`
    decides it from the inputs when it depends on them (`http.request`'s method).
    `internal`: a step the engine plans (`llm.respond`, a chain's link), never offered to
    tenants, MCP clients or the planner. `destructive`: the planner may use it only when
    LLM_PLAN_DESTRUCTIVE allows.
    """

    name: str
    pool: str
    mode: str
    inputs: type[BaseModel]
    description: str
    handler: Handler
    dangerous: bool = False
    approval: Callable[[Any], Hold | None] | None = None
    timeout: float | None = None
    planner: Callable[[Any], list[NewStep]] | None = None
    literal_inputs: bool = False
    json_schema: dict[str, Any] | None = None
    precheck: Callable[[], None] | None = None
    access: Callable[[Any, str], None] | None = None
    context: dict[str, Any] | None = None
    effect: Effect = Effect.write
    effect_of: Callable[[Any], Effect] | None = None
    internal: bool = False
    destructive: bool = False

    def __post_init__(self) -> None:
        if self.pool not in POOLS or self.mode not in MODES:
            raise ValueError(f"intent {self.name}: unknown pool {self.pool} or mode {self.mode}")

    def schema(self) -> dict[str, Any]:
        if self.json_schema is not None:
            return self.json_schema
        return self.inputs.model_json_schema()

    @functools.cached_property
    def _checker(self) -> Validator | None:
        """The JSON schema's validator (built once: it compiles the schema's references)."""
        return jsonschemas.validator(self.json_schema) if self.json_schema is not None else None

    def validate(self, raw: dict[str, Any], prefix: str = "inputs") -> BaseModel:
        """The inputs as this intent's model; InvalidRequest names the first bad field."""
        if self._checker is not None and (
                error := _schema_error(self._checker, raw, prefix)) is not None:
            raise error
        try:
            return self.inputs.model_validate(raw, context=self.context)
        except ValidationError as exc:
            raise _pydantic_error(exc, prefix) from exc

    def plan(self, inputs: BaseModel) -> list[NewStep]:
        """The steps a submission of this intent starts with: by default, itself once."""
        if self.planner is not None:
            return self.planner(inputs)
        return [NewStep(self.name, self.pool, inputs.model_dump(mode="json"))]

    def authorize(self, inputs: BaseModel, tenant_id: str) -> None:
        """Raise NotFound unless the tenant may use what these inputs name."""
        if self.access is not None:
            self.access(inputs, tenant_id)

    def effect_for(self, inputs: BaseModel) -> Effect:
        """What running it with these inputs does: a read or a write."""
        return self.effect_of(inputs) if self.effect_of is not None else self.effect

    def hold(self, inputs: BaseModel) -> Hold | None:
        """Why these inputs must be approved before the step runs, or None."""
        return self.approval(inputs) if self.approval is not None else None


def exposed(name: str, patterns: list[str]) -> bool:
    """Whether ORCHESTRATOR_EXPOSED_INTENTS offers `name`: the last pattern that matches it
    decides (`!pattern` hides), none matching hides."""
    shown = False
    for pattern in patterns:
        hide = pattern.startswith("!")
        if fnmatchcase(name, pattern.removeprefix("!")):
            shown = not hide
    return shown


def offered(intent: Intent, patterns: list[str]) -> bool:
    """Whether tenants see and may submit it: not internal, and exposed by `patterns`."""
    return not intent.internal and exposed(intent.name, patterns)


class Provider(Protocol):
    """A source of intents; `tenant_id` None asks for those every tenant shares.

    `prefix`: every name it provides starts with it ("" for any), so a lookup by name asks
    only the providers that could have it (some read the job store or Redis). A provider that
    caches (per-tenant tools read from the store) also has `forget(tenant_id)`: the registry
    calls it when a name is missing, and asks again, so what a tenant just registered is found
    at once.
    """

    prefix: str

    def intents(self, tenant_id: str | None) -> Iterable[Intent]: ...


class ResourceProvider:
    """A provider that reads the store, Redis or settings: the registry binds this process's
    resources to it when the process starts (the API's lifespan, a worker's first step)."""

    _resources: "Resources | None" = None

    def bind(self, resources: "Resources") -> None:
        self._resources = resources

    @property
    def resources(self) -> "Resources":
        if self._resources is None:
            raise RuntimeError(f"{type(self).__name__} is used before the registry was bound "
                               "to this process's resources")
        return self._resources


class StaticProvider:
    """Intents fixed in code."""

    prefix = ""

    def __init__(self) -> None:
        self._intents: dict[str, Intent] = {}

    def register(self, intent: Intent) -> Intent:
        if intent.name in self._intents:
            raise ValueError(f"intent {intent.name} is registered twice")
        self._intents[intent.name] = intent
        return intent

    def intents(self, tenant_id: str | None) -> Iterable[Intent]:
        return self._intents.values()


class Registry:
    """Intents by name, from every provider, as one tenant sees them."""

    def __init__(self, providers: list[Provider] | None = None) -> None:
        self.providers: list[Provider] = list(providers or [])
        self._resources: Resources | None = None

    def add(self, provider: Provider) -> None:
        self.providers.append(provider)
        if self._resources is not None and isinstance(provider, ResourceProvider):
            provider.bind(self._resources)

    def bind(self, resources: "Resources") -> None:
        """Give the providers that read the store, Redis or settings this process's resources."""
        self._resources = resources
        for provider in self.providers:
            if isinstance(provider, ResourceProvider):
                provider.bind(resources)

    def _all(self, tenant_id: str | None) -> dict[str, Intent]:
        found: dict[str, Intent] = {}
        for provider in self.providers:
            for intent in provider.intents(tenant_id):
                found.setdefault(intent.name, intent)
        return found

    def _find(self, name: str, tenant_id: str | None) -> Intent | None:
        """The first provider's intent of that name; a provider with a `prefix` is asked only
        for names with it (tenants' tools are read from the store only for `tool.*`)."""
        for provider in self.providers:
            if name.startswith(provider.prefix):
                found = next((i for i in provider.intents(tenant_id) if i.name == name), None)
                if found is not None:
                    return found
        return None

    def _forget_and_find(self, name: str, tenant_id: str | None) -> Intent | None:
        """Ask again after the caching providers forgot the tenant (what it just registered)."""
        for provider in self.providers:
            if (forget := getattr(provider, "forget", None)) is not None:
                forget(tenant_id)
        return self._find(name, tenant_id)

    def get(self, name: str, tenant_id: str | None = None) -> Intent:
        found = self._find(name, tenant_id) or self._forget_and_find(name, tenant_id)
        if found is None:
            raise IntentNotFound(name, self.names(tenant_id))
        return found

    def offer(self, name: str, tenant_id: str, patterns: list[str]) -> Intent:
        """An intent the tenant may submit; one it may not is as unknown as a missing one."""
        found = None
        if exposed(name, patterns):
            found = self._find(name, tenant_id) or self._forget_and_find(name, tenant_id)
        if found is None or found.internal:
            raise IntentNotFound(name, [i.name for i in self.offered(tenant_id, patterns)])
        return found

    def offered(self, tenant_id: str | None, patterns: list[str]) -> list[Intent]:
        """The intents the tenant sees: exposed by `patterns`, internal ones never."""
        return [i for i in self.all(tenant_id) if offered(i, patterns)]

    def names(self, tenant_id: str | None = None) -> list[str]:
        return sorted(self._all(tenant_id))

    def all(self, tenant_id: str | None = None) -> list[Intent]:
        found = self._all(tenant_id)
        return [found[name] for name in sorted(found)]


REGISTRY = Registry()
"""The registry every process uses: empty here; `tasks.intents` adds the families' providers
(the engine asks it by name and never imports a family)."""
