"""Live job events on Redis pub/sub: the job store is the record, this is the doorbell."""

import json
import logging
from datetime import datetime
from typing import Any

import redis

from core.models import JobEvent
from core.observations import TALLY

CHANNEL = "orch:events"
LiveEvent = dict[str, Any]
log = logging.getLogger(__name__)


def event_payload(job_id: str, seq: int, type: str, data: dict[str, Any],
                  created_at: datetime) -> LiveEvent:
    """The public shape of an event, in the API and on the wire."""
    return {"id": seq, "job_id": job_id, "type": type, "data": data,
            "time": created_at.isoformat()}


def event_dict(event: JobEvent, data: dict[str, Any] | None = None) -> LiveEvent:
    """The public shape of a stored event (with `data` in place of its own, opened)."""
    return event_payload(event.job_id, event.seq, event.type,
                         event.data if data is None else data, event.created_at)


def count_new(client: redis.Redis, events: list[LiveEvent]) -> None:
    """The events of jobs just created: counted, not announced. Nobody can follow a job yet
    (its stream is opened by its id, which the API has not answered; the submitter's own wait
    reads the store), and a follower reads the store before it listens, so announcing them
    would cost every submission a broker round trip for no reader."""
    TALLY.observe(client, events)


def publish(client: redis.Redis, events: list[LiveEvent]) -> None:
    """Announce committed events and count their figures (`core.observations`); a lost
    message only delays readers who fall back to the store."""
    if not events:
        return
    TALLY.observe(client, events)
    try:
        client.publish(CHANNEL, json.dumps(events, default=str))
    except redis.RedisError as exc:
        log.warning("could not publish %d live events: %s", len(events), exc)
