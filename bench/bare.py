"""Bare Celery on the same broker: the baseline the orchestrator is measured against."""

import os

import httpx
import redis
from celery import Celery

BROKER = os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/3")
app = Celery("bare", broker=BROKER, backend=BROKER)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                task_default_queue="bare", worker_hijack_root_logger=False)
COUNTER = "bench:bare:done"
HTTP_COUNTER = "bench:bare:http"
_client: redis.Redis | None = None
# As many connections as the worker has threads, so the pool is not the limit.
_http = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=2000,
                                                     max_keepalive_connections=2000))


@app.task(name="bare.noop")
def noop(value: int) -> int:
    return value


@app.task(name="bare.count", ignore_result=True)
def count(value: int) -> None:
    global _client
    _client = _client or redis.Redis.from_url(BROKER)
    _client.incr(COUNTER)


@app.task(name="bare.http", ignore_result=True)
def http(url: str) -> None:
    """POST to the slow server and count the answer: the concurrency measure's bare side."""
    global _client
    _client = _client or redis.Redis.from_url(BROKER)
    _http.post(url, json={}).raise_for_status()
    _client.incr(HTTP_COUNTER)
