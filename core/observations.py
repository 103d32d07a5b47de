"""Figures the workers see and the API exports, kept in Redis and fed by committed events.

Every committed event passes through `core.events.publish` on its way to readers, whichever
process committed it (a worker, the API, the sweeper); there its figures are tallied in the
process and added to Redis hashes at most `FLUSH_SECONDS` later, one `HINCRBY` per bucket that
changed (so counting costs no broker command per job): step durations and job latencies as
histogram buckets per intent, jobs queued per intent and callback delivery outcomes as
counters. The API's `/metrics` reads them at scrape time, so every API process exports the
same totals; a process killed loses at most its last `FLUSH_SECONDS` of counts. Intents
tenants name (`tool.*`, `agent.*`) count under their family: labels stay bounded and carry no
tenant data.
"""

import atexit
import json
import logging
import math
import os
import threading
import time
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
FLUSH_SECONDS = 1.0
log = logging.getLogger(__name__)


def metric_intent(name: str) -> str:
    """An intent as a metric label: tenants name their own agents and tools, so those count
    under their family (`agent.*`), keeping labels bounded and free of tenant data."""
    family = next((prefix for prefix in TENANT_DEFINED if name.startswith(prefix)), None)
    return f"{family}*" if family else name


def _bucket(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


Counts = dict[tuple[str, str], float]


def _observe(counts: Counts, key: str, intent: str, seconds: float) -> None:
    """Count `seconds` in the one bucket it falls in (the cumulative counts Prometheus wants
    are summed at scrape)."""
    label = metric_intent(intent)
    le = next((le for le in BUCKETS if seconds <= le), math.inf)
    counts[(key, f"{label}{SEP}{_bucket(le)}")] += 1
    counts[(key, f"{label}{SEP}sum")] += seconds


def tally(counts: Counts, events: list[dict[str, Any]]) -> None:
    """Add to `counts` the figures these committed events carry."""
    for event in events:
        kind, data = event["type"], event["data"]
        if kind in STEP_ENDS and data.get("duration_ms") is not None:
            _observe(counts, STEPS, data["intent"], data["duration_ms"] / 1000)
        elif kind in TERMINAL_EVENTS and data.get("latency_ms") is not None:
            _observe(counts, JOBS, data["intent"], data["latency_ms"] / 1000)
        elif kind in DELIVERY_OUTCOMES:
            counts[(DELIVERIES, DELIVERY_OUTCOMES[kind])] += 1
        elif kind == EventType.job_queued and data.get("intent"):
            counts[(SUBMITTED, metric_intent(data["intent"]))] += 1


def _write(pipe: Any, counts: Counts) -> None:
    for (key, name), amount in counts.items():
        if name.endswith(f"{SEP}sum"):
            pipe.hincrbyfloat(key, name, amount)
        else:
            pipe.hincrby(key, name, int(amount))


class Tally:
    """This process's figures not yet added to Redis, added by a background thread every
    `FLUSH_SECONDS` (and before a scrape, and at exit) in one command per changed bucket."""

    def __init__(self) -> None:
        self._counts: Counts = defaultdict(float)
        self._lock = threading.Lock()
        self._owner = 0  # the pid whose flusher runs (a forked child starts its own)
        self._client: redis.Redis | None = None

    def observe(self, client: redis.Redis, events: list[dict[str, Any]]) -> None:
        """Tally `events`; the flusher adds them to `client` within `FLUSH_SECONDS`."""
        with self._lock:
            self._client = client
            if self._owner != os.getpid():
                self._start()
            tally(self._counts, events)

    def flush(self) -> None:
        """Add the pending counts to Redis now (the flusher; the API before a scrape)."""
        with self._lock:
            client, counts = self._client, self._counts
            if client is None or not counts:
                return
            self._counts = defaultdict(float)
        try:
            pipe = client.pipeline(transaction=False)
            _write(pipe, counts)
            pipe.execute()
        except redis.RedisError as exc:
            with self._lock:  # kept for the next flush
                for item, amount in counts.items():
                    self._counts[item] += amount
            log.warning("could not add %d figures to the metrics: %s", len(counts), exc)

    def _start(self) -> None:
        self._owner, self._counts = os.getpid(), defaultdict(float)

        def flusher() -> None:
            while True:
                time.sleep(FLUSH_SECONDS)
                self.flush()

        threading.Thread(target=flusher, name="orch-metrics", daemon=True).start()
        atexit.register(self.flush)  # a process that stops in order loses nothing


TALLY = Tally()


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
