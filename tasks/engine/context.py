"""What a step's handler gets and may return: its context, a plan to add, a wait."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from core.models import EventType
from core.store.tables import NewStep

if TYPE_CHECKING:
    from tasks.engine.resources import Resources


class Cancelled(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a handler that stopped because its job was cancelled."""


class TimeLimitExceeded(Exception):  # noqa: N818
    """Raised by a handler that ran past its step's soft time limit."""


@dataclass(frozen=True)
class Hold:
    """Why a step must be approved before it runs, and for how long the approval may wait."""

    reason: str
    ttl: float | None = None


@dataclass(frozen=True)
class Extend:
    """A handler's output together with steps to add to the end of its job's plan."""

    output: Any
    steps: list[NewStep] = field(default_factory=list)


@dataclass(frozen=True)
class Wait:
    """The step handed work to an outside system, which will call the resume URL."""

    reason: str
    timeout: float | None = None


@dataclass
class StepContext:
    """One run of one step: ids, validated inputs, and the engine's services to the handler.

    `emit(type, data)` appends an event to the job's log and announces it live (output lines,
    streamed deltas, audit records) while the step runs.
    """

    job_id: str
    index: int
    tenant_id: str
    intent: str
    inputs: BaseModel
    deadline: float
    is_cancelled: Callable[[], bool]
    issue_resume_url: Callable[[], str]
    plan_step: Callable[[str, dict[str, Any]], NewStep]
    emit: Callable[[EventType, dict[str, Any]], None]
    """Append an event `(type, data)` to the job's log and announce it (output, audit)."""
    resources: "Resources"
    """This process's clients and settings (store, Redis, breakers, adapters)."""
    _resume_url: str | None = None

    def cancelled(self) -> bool:
        """Whether the job was cancelled (cheap; a broker outage reads as not cancelled)."""
        return self.is_cancelled()

    def remaining(self) -> float:
        """Seconds left before the step's soft time limit."""
        return self.deadline - time.monotonic()

    def resume_url(self) -> str:
        """This step's single-use resume URL, recorded before it is handed to anyone."""
        if self._resume_url is None:
            self._resume_url = self.issue_resume_url()
        return self._resume_url
