"""Figures tallied in a process and added to a real Valkey's shared totals in one command per
bucket, at most a second late, exactly."""

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from core import observations
from tests import services


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """A private Valkey, so its command counts are this test's alone."""
    with services.redis_server() as server, redis.Redis.from_url(server.url) as connection:
        yield connection


def finished(intent: str, ms: int) -> list[dict[str, Any]]:
    """A one-step job's events: queued, its step's end, its end."""
    return [{"type": "job_queued", "data": {"intent": intent}},
            {"type": "step_succeeded", "data": {"intent": intent, "duration_ms": ms}},
            {"type": "job_succeeded", "data": {"intent": intent, "latency_ms": ms + 5}}]


def wait_for(check: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_burst_of_jobs_costs_one_command_per_bucket_and_every_count_arrives(
        client: redis.Redis) -> None:
    # Given a process tally (a fresh one: the module's is shared with other tests)
    tally = observations.Tally()
    tally.observe(client, [])  # its flusher starts
    client.config_resetstat()
    # When 200 jobs of one intent end within the flush interval, each published
    for n in range(200):
        tally.observe(client, finished("debug.echo", 3 + n % 2))
    # Then, once flushed, the totals are exact...
    wait_for(lambda: client.hget(observations.SUBMITTED, "debug.echo") == b"200")
    steps = observations.histograms(client, observations.STEPS)["debug.echo"]
    jobs = observations.histograms(client, observations.JOBS)["debug.echo"]
    assert steps.buckets == {"0.01": 200.0} and jobs.buckets == {"0.01": 200.0}
    assert steps.sum == pytest.approx(200 * 0.0035) and jobs.sum == pytest.approx(200 * 0.0085)
    # ... and it took one command per bucket that changed per flush, not five per job
    calls = {name: int(entry["calls"]) for name, entry in client.info("commandstats").items()}
    increments = sum(calls.get(f"cmdstat_{c}", 0) for c in ("hincrby", "hincrbyfloat"))
    assert 5 <= increments <= 5 * 3, calls


def test_the_api_adds_its_own_tally_before_a_scrape(client: redis.Redis) -> None:
    # Given counts tallied but not yet due
    tally = observations.Tally()
    tally.observe(client, finished("debug.chain", 20))
    assert client.hget(observations.SUBMITTED, "debug.chain") is None
    # When it flushes (as /metrics does first)
    tally.flush()
    # Then they are in Redis at once
    assert client.hget(observations.SUBMITTED, "debug.chain") == b"1"
    assert observations.histograms(client, observations.JOBS)["debug.chain"].buckets == {
        "0.05": 1.0}
