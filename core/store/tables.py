"""What every part of the store shares: table handles, plan steps, hand-offs, ids, tokens."""

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from core.events import LiveEvent
from core.models import EventType, IdempotencyRecord, Job, JobEvent, JobStep

JOBS = Job.__table__  # type: ignore[attr-defined]
STEPS = JobStep.__table__  # type: ignore[attr-defined]
EVENTS = JobEvent.__table__  # type: ignore[attr-defined]
IDEMPOTENCY = IdempotencyRecord.__table__  # type: ignore[attr-defined]
Items = list[tuple[EventType, dict[str, Any]]]


@dataclass(frozen=True)
class NewStep:
    """A step of a plan, before it is stored."""

    intent: str
    pool: str
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NextStep:
    """A stored step to send to its pool."""

    job_id: str
    index: int
    intent: str
    pool: str


@dataclass
class Handoff:
    """What a committed transaction leaves to do: publish its events, send a step (or none),
    and wake the callbacks drainer.

    The drainer is woken for callbacks the events scheduled (`callback_scheduled`), and when
    `deliveries_due` says others are (the sweeper's look, a redelivery): the store says which.
    """

    events: list[LiveEvent] = field(default_factory=list)
    send: NextStep | None = None
    deliveries_due: bool = False


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def step_task_id(job_id: str, index: int) -> str:
    """The Celery task id of a step: derived, so cancel can revoke without a lookup."""
    return f"{job_id}-{index}"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_token(prefix: str) -> str:
    """A fresh single-use token (approval or resume); only its hash is stored."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def binding(intent: str, inputs: dict[str, Any]) -> str:
    """SHA-256 of a step's exact intent and inputs: what an approval token is bound to."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return sha256(f"{intent}\n{canonical}")


def approval_hash(token: str, intent: str, inputs: dict[str, Any]) -> str:
    """What is stored for an approval token: valid only with this exact intent and inputs."""
    return sha256(f"{token}\n{binding(intent, inputs)}")
