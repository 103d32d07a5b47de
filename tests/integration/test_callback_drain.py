"""The callbacks drainer on a real stack with no sweeper: the jobs that end wake it, attempts
are in flight together, and each delivery is sent once."""

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
import redis

from tests import services
from tests.integration.conftest import Stack, running_stack
from tests.integration.receiver import Server, reply, serve

DB_INDEX = 10
NARROW_DB_INDEX = 8  # module stacks of test_callbacks and test_continuation: not alive now
ALL_POOLS = ["llm", "tools", "flow", "callbacks", "memory"]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def drain_stack(request: pytest.FixtureRequest,
                broker: services.BrokerServer) -> Iterator[Stack]:
    # A fresh Redis database: no drainer key left by an earlier stack.
    redis.Redis.from_url(broker.url.rsplit("/", 1)[0] + f"/{DB_INDEX}").flushdb()
    with running_stack(request, request.param, DB_INDEX, {"CALLBACK_SWEEP_SECONDS": "3600"},
                       name=f"drain_{request.param}", split_workers=False,
                       concurrency=8) as running:
        # Without the sweeper nothing else would ever send a delivery the wake-up missed.
        assert running.sweeper is not None
        running.sweeper.stop()
        running.sweeper = None
        yield running


@pytest.fixture
def narrow_stack(request: pytest.FixtureRequest, broker: services.BrokerServer) -> Iterator[Stack]:
    """One worker for every pool, two callback attempts in flight, no sweeper."""
    redis.Redis.from_url(broker.url.rsplit("/", 1)[0] + f"/{NARROW_DB_INDEX}").flushdb()
    with running_stack(request, "sqlite", NARROW_DB_INDEX, {
            "CALLBACK_SWEEP_SECONDS": "3600", "CALLBACK_CONCURRENCY": "2"},
            name="drain_narrow", split_workers=False, concurrency=8) as running:
        assert running.sweeper is not None
        running.sweeper.stop()
        running.sweeper = None
        yield running


def submit(client: httpx.Client, url: str, count: int) -> list[str]:
    jobs = [{"intent": "debug.echo", "inputs": {"t": time.time_ns(), "n": n},
             "callback_url": url} for n in range(count)]
    response = client.post("/v1/jobs:batch", json={"jobs": jobs})
    assert response.status_code == 202, response.text
    return [job["job_id"] for job in response.json()["jobs"]]


def wait_received(hook: Server, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(hook.received) < count:
        assert time.monotonic() < deadline, f"{len(hook.received)} of {count} callbacks arrived"
        time.sleep(0.05)


def deliveries_of(client: httpx.Client, job_ids: list[str],
                  timeout: float = 30) -> list[dict[str, Any]]:
    """The jobs' deliveries with their attempts, once none is pending or being sent."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [client.get("/v1/deliveries", params={"job_id": job_id}).json()[0]
                for job_id in job_ids]
        if all(row["status"] not in ("pending", "sending") for row in rows):
            return [client.get(f"/v1/deliveries/{row['id']}").json() for row in rows]
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def test_callbacks_of_jobs_ending_in_waves_each_arrive_once_without_the_sweeper(
        drain_stack: Stack) -> None:
    # Given jobs with callbacks that end in waves, some while a drainer runs, some after it
    # stopped (the sweeper, which would cover a missed wake-up, is not running)
    client = drain_stack.client()
    with serve(reply(204, body=b"")) as hook:
        job_ids: list[str] = []
        for wave, pause in ((1, 0.0), (7, 0.4), (2, 1.5), (15, 0.0), (1, 2.5), (5, 0.2)):
            job_ids += submit(client, f"{hook.url}/hook", wave)
            time.sleep(pause)
        # When they have all ended
        wait_received(hook, len(job_ids))
        time.sleep(1.0)  # room for a duplicate to arrive
    # Then every callback arrived exactly once, its delivery succeeded at the first attempt,
    # and the job's log says so
    ids = [seen.headers["webhook-id"] for seen in hook.received]
    assert len(ids) == len(set(ids)) == len(job_ids) == 31
    found = deliveries_of(client, job_ids)
    assert {row["id"] for row in found} == set(ids)
    assert {(row["status"], row["attempts"]) for row in found} == {("succeeded", 1)}
    events = client.get(f"/v1/jobs/{job_ids[-1]}/events").json()
    assert "callback_succeeded" in [event["type"] for event in events]


def test_attempts_to_a_slow_receiver_are_in_flight_together(drain_stack: Stack) -> None:
    # Given a receiver that takes a second to answer each callback
    client = drain_stack.client()
    lock, in_flight, most = threading.Lock(), [0], [0]

    def slow(handler: BaseHTTPRequestHandler) -> None:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(1.0)
        with lock:
            in_flight[0] -= 1
        reply(204, body=b"")(handler)

    with serve(slow) as hook:
        # When 24 jobs with callbacks to it end at once
        job_ids = submit(client, f"{hook.url}/hook", 24)
        wait_received(hook, 24)
        found = deliveries_of(client, job_ids)
    # Then the attempts overlapped (one at a time they would take 24 s): many were in flight
    # together, and they all started within a few seconds
    starts = sorted(datetime.fromisoformat(row["attempt_log"][0]["started_at"]) for row in found)
    assert most[0] >= 8, most
    assert (starts[-1] - starts[0]).total_seconds() < 12
    assert {row["status"] for row in found} == {"succeeded"}


def test_a_drainer_whose_worker_stops_hands_the_rest_to_the_next_worker(
        narrow_stack: Stack) -> None:
    # Given 40 callbacks to a receiver that takes 0.4 s each, two at a time (8 s in all)
    client = narrow_stack.client()

    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(0.4)
        reply(204, body=b"")(handler)

    with serve(slow) as hook:
        job_ids = submit(client, f"{hook.url}/hook", 40)
        wait_received(hook, 4)
        # When the worker draining them is told to stop
        started = time.monotonic()
        narrow_stack.workers["all"].stop()
        stopped, sent = time.monotonic() - started, len(hook.received)
        # Then it stops once its attempts in flight end, not after the whole backlog (its warm
        # shutdown would wait 7 s for it), and the next worker drains the rest
        assert stopped < 4, f"the worker took {stopped:.1f} s to stop"
        assert sent < 30, sent
        narrow_stack.start_worker("all", ALL_POOLS, concurrency=8)
        wait_received(hook, 40)
        time.sleep(1.0)  # room for a duplicate to arrive
        found = deliveries_of(client, job_ids)
    ids = [seen.headers["webhook-id"] for seen in hook.received]
    assert len(ids) == len(set(ids)) == 40
    assert {(row["status"], row["attempts"]) for row in found} == {("succeeded", 1)}
