"""Bare Celery on the same broker: the baseline the orchestrator is measured against."""

import os
import threading

import httpx
import redis
from celery import Celery

BROKER = os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/3")
app = Celery("bare", broker=BROKER, backend=BROKER)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                task_default_queue="bare", worker_hijack_root_logger=False)
COUNTER = "bench:bare:done"
HTTP_COUNTER = "bench:bare:http"
HTTP_FAILED = "bench:bare:http-failed"
_client: redis.Redis | None = None
# One HTTP client per worker thread (a client shared by hundreds of threads hits races in
# httpcore), all with one TLS context (building one costs milliseconds of CPU).
_tls = httpx.create_ssl_context()
_local = threading.local()


def _http() -> httpx.Client:
    if not hasattr(_local, "client"):
        _local.client = httpx.Client(timeout=60, verify=_tls)
    client: httpx.Client = _local.client
    return client


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
    """POST to the slow server and count the answer (or the failure): the concurrency
    measure's bare side."""
    global _client
    _client = _client or redis.Redis.from_url(BROKER)
    try:
        _http().post(url, json={}).raise_for_status()
    except httpx.HTTPError:
        _client.incr(HTTP_FAILED)
        raise
    finally:
        _client.incr(HTTP_COUNTER)
