"""Figures the workers see and the API exports, kept in Redis and fed by committed events.

Every committed event passes through `core.events.publish` on its way to readers, whichever
process committed it (a worker, the API, the sweeper); there its figures are counted into Redis
hashes: step durations and job latencies as cumulative histogram buckets per intent, jobs
queued per intent and callback delivery outcomes as counters. The API's `/metrics` reads them
at scrape time, so every API process exports the same totals. Intents tenants name (`tool.*`,
`agent.*`) count under their family: labels stay bounded and carry no tenant data.
"""

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis

from core.models import TERMINAL_EVENTS, EventType

STEPS = "orch:metrics:step_seconds"
JOBS = "orch:metrics:job_seconds"
DELIVERIES = "orch:metrics:deliveries"
SUBMITTED = "orch:metrics:jobs_submitted"
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
           math.inf)
STEP_ENDS = frozenset({EventType.step_succeeded, EventType.step_failed})
DELIVERY_OUTCOMES = {EventType.callback_succeeded: "succeeded",
                     EventType.callback_failed: "failed", EventType.callback_dead: "dead"}
TENANT_DEFINED = ("agent.", "tool.")
SEP = "|"


def metric_intent(name: str) -> str:
    """An intent as a metric label: tenants name their own agents and tools, so those count
    under their family (`agent.*`), keeping labels bounded and free of tenant data."""
    family = next((prefix for prefix in TENANT_DEFINED if name.startswith(prefix)), None)
    return f"{family}*" if family else name


def _bucket(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


def _observe(pipe: Any, key: str, intent: str, seconds: float) -> None:
    """Count `seconds` in the one bucket it falls in (two commands; the cumulative counts
    Prometheus wants are summed at scrape)."""
    label = metric_intent(intent)
    le = next((le for le in BUCKETS if seconds <= le), math.inf)
    pipe.hincrby(key, f"{label}{SEP}{_bucket(le)}", 1)
    pipe.hincrbyfloat(key, f"{label}{SEP}sum", seconds)


def observe(pipe: Any, events: list[dict[str, Any]]) -> None:
    """Add to `pipe` (a Redis pipeline the caller executes) the counts of the figures these
    committed events carry."""
    for event in events:
        kind, data = event["type"], event["data"]
        if kind in STEP_ENDS and data.get("duration_ms") is not None:
            _observe(pipe, STEPS, data["intent"], data["duration_ms"] / 1000)
        elif kind in TERMINAL_EVENTS and data.get("latency_ms") is not None:
            _observe(pipe, JOBS, data["intent"], data["latency_ms"] / 1000)
        elif kind in DELIVERY_OUTCOMES:
            pipe.hincrby(DELIVERIES, DELIVERY_OUTCOMES[kind], 1)
        elif kind == EventType.job_queued and data.get("intent"):
            pipe.hincrby(SUBMITTED, metric_intent(data["intent"]), 1)


@dataclass
class Histogram:
    """One intent's cumulative buckets and sum, as Prometheus renders them."""

    buckets: dict[str, float] = field(default_factory=dict)
    sum: float = 0.0

    def cumulative(self) -> list[tuple[str, float]]:
        """Each bucket's count with every smaller bucket's added (`le` is "at most")."""
        total, counts = 0.0, []
        for le in BUCKETS:
            total += self.buckets.get(_bucket(le), 0.0)
            counts.append((_bucket(le), total))
        return counts


def histograms(client: redis.Redis, key: str) -> dict[str, Histogram]:
    """The histograms per intent stored under `key`."""
    found: dict[str, Histogram] = defaultdict(Histogram)
    for raw, value in client.hgetall(key).items():
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        intent, _, part = name.rpartition(SEP)
        if part == "sum":
            found[intent].sum = float(value)
        else:
            found[intent].buckets[part] = float(value)
    return dict(found)


def deliveries(client: redis.Redis) -> dict[str, float]:
    """Callback delivery attempts by outcome."""
    counts = {outcome: 0.0 for outcome in DELIVERY_OUTCOMES.values()}
    for raw, value in client.hgetall(DELIVERIES).items():
        counts[raw.decode() if isinstance(raw, bytes) else str(raw)] = float(value)
    return counts


def submitted(client: redis.Redis) -> dict[str, float]:
    """Jobs queued per intent (as a metric label)."""
    return {(raw.decode() if isinstance(raw, bytes) else str(raw)): float(value)
            for raw, value in client.hgetall(SUBMITTED).items()}


# --- the oldest message's age: each message carries the time it was sent -----------------

SENT_HEADER = "orch_sent_at"


def oldest_age(client: redis.Redis, queue: str, now: float) -> float:
    """Seconds the oldest message of `queue` has waited (0 when empty, or unstamped).

    Kombu pushes on the left of the list and workers take from the right: the oldest message
    is the last one.
    """
    raw = client.lindex(queue, -1)
    if raw is None:
        return 0.0
    try:
        sent = float(json.loads(raw)["headers"][SENT_HEADER])
    except (ValueError, KeyError, TypeError):
        return 0.0
    return max(0.0, now - sent)
