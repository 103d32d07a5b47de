"""The intent registry: every intent, its pool, mode, input schema and static plan.

This is the one place intents are added.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import IntentNotFound
from core.store import NewStep
from workers.pools import POOLS

MODES = ("agent", "flow", "mcp")


@dataclass(frozen=True)
class Intent:
    """A registered intent and how to turn validated inputs into steps."""

    name: str
    pool: str
    mode: str
    inputs: type[BaseModel]
    description: str
    plan: Callable[[BaseModel], list[NewStep]]

    def __post_init__(self) -> None:
        if self.pool not in POOLS or self.mode not in MODES:
            raise ValueError(f"intent {self.name}: unknown pool {self.pool} or mode {self.mode}")

    def schema(self) -> dict[str, Any]:
        return self.inputs.model_json_schema()


class Registry:
    """Intents by name."""

    def __init__(self) -> None:
        self._intents: dict[str, Intent] = {}

    def register(self, intent: Intent) -> Intent:
        if intent.name in self._intents:
            raise ValueError(f"intent {intent.name} is registered twice")
        self._intents[intent.name] = intent
        return intent

    def get(self, name: str) -> Intent:
        intent = self._intents.get(name)
        if intent is None:
            raise IntentNotFound(name, self.names())
        return intent

    def names(self) -> list[str]:
        return sorted(self._intents)

    def all(self) -> list[Intent]:
        return [self._intents[name] for name in self.names()]


class EchoInputs(BaseModel):
    """Any JSON object; `debug.echo` returns it."""

    model_config = ConfigDict(extra="allow")


class SleepInputs(BaseModel):
    """How long `debug.sleep` sleeps."""

    seconds: float = Field(1.0, ge=0, le=3600, description="Seconds to sleep.")


class ChainInputs(BaseModel):
    """The shape of a `debug.chain`."""

    steps: int = Field(3, ge=1, le=100, description="Number of steps in the chain.")
    delay: float = Field(0.0, ge=0, le=60, description="Seconds each step waits.")


class FailInputs(BaseModel):
    """What `debug.fail` fails with."""

    message: str = Field("failed on purpose", max_length=1000, description="The error text.")
    unavailable_upstream: str | None = Field(
        None, max_length=200, description="Fail as if this upstream's circuit breaker were "
        "open (retried by Celery after `retry_after`), to rehearse an outage.")
    retry_after: float = Field(1.0, ge=0, le=3600, description="With `unavailable_upstream`.")


def _one(intent: str, task: str, pool: str) -> Callable[[BaseModel], list[NewStep]]:
    return lambda inputs: [NewStep(intent, task, pool, inputs.model_dump())]


def _chain_plan(inputs: BaseModel) -> list[NewStep]:
    assert isinstance(inputs, ChainInputs)
    return [
        NewStep("debug.chain", "tasks.tools.chain_link", "tools",
                {"step": i + 1, "of": inputs.steps, "delay": inputs.delay})
        for i in range(inputs.steps)
    ]


REGISTRY = Registry()
REGISTRY.register(Intent("debug.echo", "tools", "agent", EchoInputs,
                         "Return the inputs unchanged.",
                         _one("debug.echo", "tasks.tools.echo", "tools")))
REGISTRY.register(Intent("debug.sleep", "tools", "agent", SleepInputs,
                         "Sleep for `seconds`; cancellable while it sleeps.",
                         _one("debug.sleep", "tasks.tools.sleep", "tools")))
REGISTRY.register(Intent("debug.fail", "tools", "agent", FailInputs,
                         "Fail with `message`: for testing failure handling and callbacks.",
                         _one("debug.fail", "tasks.tools.fail", "tools")))
REGISTRY.register(Intent("debug.chain", "tools", "agent", ChainInputs,
                         "A static chain of `steps` steps, each waiting `delay` seconds.",
                         _chain_plan))
