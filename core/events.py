"""Live job events on Redis pub/sub: the job store is the record, this is the doorbell."""

import contextlib
import json
from typing import Any

import redis

from core.models import JobEvent

CHANNEL = "orch:events"
TERMINAL_EVENTS = frozenset({"job_succeeded", "job_failed", "job_cancelled"})


def event_dict(event: JobEvent) -> dict[str, Any]:
    """The public shape of an event, in the API and on the wire."""
    return {
        "id": event.seq,
        "job_id": event.job_id,
        "type": event.type,
        "data": event.data,
        "time": event.created_at.isoformat(),
    }


def publish(client: redis.Redis, events: list[JobEvent]) -> None:
    """Announce committed events; a lost message only delays readers who fall back to the store."""
    if not events:
        return
    payload = json.dumps([event_dict(e) for e in events], default=str)
    with contextlib.suppress(redis.RedisError):
        client.publish(CHANNEL, payload)
