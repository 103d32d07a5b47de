"""Prometheus metrics of the API, and gauges read from the store and broker at scrape time."""

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import select

from adapters.agents import AGENT_PREFIX
from adapters.breakers import STATE_GAUGE, render_gauges
from adapters.breakers import Gauge as Sample
from adapters.callbacks import CALLBACK_PREFIX
from adapters.http import HTTP_PREFIX
from api.state import AppState
from core import observations
from core.models import Job
from tasks.engine import heartbeat, slots
from tasks.engine.pools import POOLS

REGISTRY = CollectorRegistry()
JOBS = Gauge("orchestrator_jobs", "Jobs in the store by status.", ["status"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("orchestrator_queue_depth", "Messages waiting in a pool's queue.", ["pool"],
                    registry=REGISTRY)
OLDEST = Gauge("orchestrator_queue_oldest_age_seconds",
               "How long the oldest message in a pool's queue has waited (0 when empty).",
               ["pool"], registry=REGISTRY)
WORKERS = Gauge("orchestrator_live_workers", "Workers that stamped a pool recently.", ["pool"],
                registry=REGISTRY)
# Upstreams tenants name (their callback hosts, the hosts of their HTTP tools and requests):
# never labels; counted by state and summed under one name per kind.
TENANT_CHOSEN = {CALLBACK_PREFIX: ("orchestrator_callback_breakers", "callback"),
                 HTTP_PREFIX: ("orchestrator_http_breakers", "http"),
                 AGENT_PREFIX: ("orchestrator_agent_breakers", "agent")}
STATE_NAMES = {value: name for name, value in STATE_GAUGE.items()}


class Upstreams(Collector):
    """Breaker state, retries and failures per upstream, as every worker wrote them to Redis."""

    def __init__(self, samples: list[tuple[str, dict[str, str], float]]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "orchestrator_breaker_state": GaugeMetricFamily(
                "orchestrator_breaker_state", "0 closed, 1 half-open, 2 open.",
                labels=["upstream"]),
            "orchestrator_callback_breakers": GaugeMetricFamily(
                "orchestrator_callback_breakers", "Breakers of tenants' callback hosts by state.",
                labels=["state"]),
            "orchestrator_http_breakers": GaugeMetricFamily(
                "orchestrator_http_breakers", "Breakers of hosts of tenants' HTTP calls by state.",
                labels=["state"]),
            "orchestrator_agent_breakers": GaugeMetricFamily(
                "orchestrator_agent_breakers", "Breakers of tenants' agents' hosts by state.",
                labels=["state"]),
            "orchestrator_upstream_retries_total": CounterMetricFamily(
                "orchestrator_upstream_retries", "Retries of calls to an upstream.",
                labels=["upstream"]),
            "orchestrator_upstream_failures_total": CounterMetricFamily(
                "orchestrator_upstream_failures", "Failed calls to an upstream.",
                labels=["upstream"]),
        }
        for name, labels, value in self.samples:
            families[name].add_metric(list(labels.values()), value)
        yield from families.values()


def bounded(samples: list[Sample]) -> list[Sample]:
    """The samples without tenant data in labels: callback and HTTP hosts are tenants' to
    choose, so their breakers are counted by state and their retries and failures summed as
    `callback` and `http`."""
    totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
    for family, _ in TENANT_CHOSEN.values():
        for state in STATE_NAMES.values():
            totals[family, (("state", state),)] = 0.0
    for name, labels, value in samples:
        chosen = next((kind for prefix, kind in TENANT_CHOSEN.items()
                       if labels["upstream"].startswith(prefix)), None)
        if chosen is None:
            totals[name, tuple(labels.items())] += value
        elif name == "orchestrator_breaker_state":
            totals[chosen[0], (("state", STATE_NAMES[value]),)] += 1
        else:
            totals[name, (("upstream", chosen[1]),)] += value
    return [(name, dict(labels), value) for (name, labels), value in totals.items()]


class Slots(Collector):
    """Concurrency slots in use and steps waiting for one, per limit pattern, summed over the
    tenants (a tenant id is never a label; the patterns are the operator's)."""

    def __init__(self, usage: dict[str, tuple[int, int]]) -> None:
        self.usage = usage

    def collect(self) -> Iterator[Metric]:
        in_use = GaugeMetricFamily("orchestrator_concurrency_slots_in_use",
                                   "Steps holding a slot of a concurrency limit.",
                                   labels=["limit"])
        waiting = GaugeMetricFamily("orchestrator_concurrency_throttled",
                                    "Steps waiting for a slot of a concurrency limit.",
                                    labels=["limit"])
        for pattern, (held, queued) in sorted(self.usage.items()):
            in_use.add_metric([pattern], held)
            waiting.add_metric([pattern], queued)
        yield in_use
        yield waiting


def slot_usage(state: AppState) -> dict[str, tuple[int, int]]:
    """Per limit pattern: slots held and steps waiting, over every tenant."""
    totals: dict[str, tuple[int, int]] = {}
    for key in slots.limits(state.redis):
        pattern = key.split(":", 1)[-1]
        held, queued = slots.in_use(state.redis, key)
        before = totals.get(pattern, (0, 0))
        totals[pattern] = (before[0] + held, before[1] + queued)
    return totals


class WorkerFigures(Collector):
    """Step durations, job latencies, jobs queued and callback outcomes, as every process
    counted them into Redis (`core.observations`; each adds its tally at most a second later,
    this process its own before the scrape)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        observations.TALLY.flush()
        for key, name, text in (
                (observations.STEPS, "orchestrator_step_duration_seconds",
                 "Steps' run time from start to success or failure, per intent."),
                (observations.JOBS, "orchestrator_job_latency_seconds",
                 "Jobs' time from submission to their end, per intent.")):
            family = HistogramMetricFamily(name, text, labels=["intent"])
            for intent, found in sorted(observations.histograms(self.client, key).items()):
                family.add_metric([intent], found.cumulative(), found.sum)
            yield family
        queued = CounterMetricFamily("orchestrator_jobs_submitted", "Jobs accepted and queued.",
                                     labels=["intent"])
        for intent, count in sorted(observations.submitted(self.client).items()):
            queued.add_metric([intent], count)
        yield queued
        outcomes = CounterMetricFamily("orchestrator_callback_deliveries",
                                       "Callback delivery attempts by outcome.",
                                       labels=["outcome"])
        for outcome, count in observations.deliveries(self.client).items():
            outcomes.add_metric([outcome], count)
        yield outcomes


def render(state: AppState) -> bytes:
    """Refresh the scrape-time gauges and render every metric."""
    with state.db.read() as session:
        for status, count in session.exec(select(Job.status, func.count()).group_by(Job.status)):
            JOBS.labels(status=str(status)).set(count)
    ttl = state.settings.worker.heartbeat_seconds * 3
    now = time.time()
    for pool in POOLS.values():
        QUEUE_DEPTH.labels(pool=pool.name).set(state.redis.llen(pool.queue))
        OLDEST.labels(pool=pool.name).set(observations.oldest_age(state.redis, pool.queue, now))
        WORKERS.labels(pool=pool.name).set(len(heartbeat.live_workers(state.redis, pool.name, ttl)))
    upstreams = CollectorRegistry()
    upstreams.register(Upstreams(bounded(render_gauges(state.redis))))
    upstreams.register(Slots(slot_usage(state)))
    upstreams.register(WorkerFigures(state.redis))
    return generate_latest(REGISTRY) + generate_latest(upstreams)
