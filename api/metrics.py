"""Prometheus metrics of the API, and gauges read from the store and broker at scrape time."""

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from sqlalchemy import func
from sqlmodel import select

from api.state import AppState
from core.models import Job
from workers import heartbeat
from workers.pools import POOLS

REGISTRY = CollectorRegistry()
JOBS_SUBMITTED = Counter("orchestrator_jobs_submitted_total", "Jobs accepted by the API.",
                         ["intent"], registry=REGISTRY)
JOBS = Gauge("orchestrator_jobs", "Jobs in the store by status.", ["status"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("orchestrator_queue_depth", "Messages waiting in a pool's queue.", ["pool"],
                    registry=REGISTRY)
WORKERS = Gauge("orchestrator_live_workers", "Workers that stamped a pool recently.", ["pool"],
                registry=REGISTRY)


def render(state: AppState) -> bytes:
    """Refresh the scrape-time gauges and render every metric."""
    with state.db.read() as session:
        for status, count in session.exec(select(Job.status, func.count()).group_by(Job.status)):
            JOBS.labels(status=str(status)).set(count)
    ttl = state.settings.worker.heartbeat_seconds * 3
    for pool in POOLS.values():
        QUEUE_DEPTH.labels(pool=pool.name).set(state.redis.llen(pool.queue))
        WORKERS.labels(pool=pool.name).set(len(heartbeat.live_workers(state.redis, pool.name, ttl)))
    return generate_latest(REGISTRY)
