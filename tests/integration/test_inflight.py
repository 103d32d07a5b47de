"""Finding a job's messages in a real broker: queued, taken by a worker, or gone."""

from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from core.settings import get_settings
from core.store.tables import NextStep
from tasks.engine.app import create_celery
from tasks.engine.chain import send_step
from workers.inflight import CHUNK, jobs_in_broker


def enqueue(app: Celery, job_id: str, steps: int = 1, start: int = 0) -> None:
    for index in range(start, start + steps):
        send_step(app, NextStep(job_id, index, "debug.echo", "tools"))


@pytest.fixture
def url(broker_url: str) -> Iterator[str]:
    own = broker_url.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(own).flushdb()
    yield own
    redis.Redis.from_url(own).flushdb()


@pytest.fixture
def app(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    monkeypatch.setenv("REDIS_URL", url)
    get_settings.cache_clear()
    yield create_celery()
    get_settings.cache_clear()


def test_a_queued_job_is_found_and_others_are_not(app: Celery, url: str) -> None:
    enqueue(app, "job_queued", steps=2)
    found = jobs_in_broker(redis.Redis.from_url(url), ["job_queued", "job_gone"], set())
    assert found == {"job_queued"}


def test_a_job_is_found_past_the_first_chunk(app: Celery, url: str) -> None:
    for n in range(CHUNK + 5):
        enqueue(app, f"job_{n}")
    client = redis.Redis.from_url(url)
    assert jobs_in_broker(client, ["job_0", f"job_{CHUNK + 4}", "job_gone"], set()) == {
        "job_0", f"job_{CHUNK + 4}"}


def test_a_taken_but_unacknowledged_message_is_found_while_held_until_acked(
        app: Celery, url: str) -> None:
    enqueue(app, "job_taken", start=3)
    client = redis.Redis.from_url(url)
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue("tools", no_ack=False)
        message = queue.get(timeout=5)
        assert message.headers["id"] == "job_taken-3"
        assert client.llen("tools") == 0
        assert jobs_in_broker(client, ["job_taken"], {"job_taken-3"}) == {"job_taken"}
        message.ack()
        assert jobs_in_broker(client, ["job_taken"], {"job_taken-3"}) == set()
        queue.close()


def test_an_unacknowledged_message_no_live_worker_holds_is_not_found(
        app: Celery, url: str) -> None:
    # Given a message taken from its queue and left unacknowledged (its worker died, or its
    # connection was lost in a broker outage), held by nobody alive; another job's is held
    enqueue(app, "job_left", start=1)
    enqueue(app, "job_held", start=0)
    client = redis.Redis.from_url(url)
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue("tools", no_ack=False)
        taken = {queue.get(timeout=5).headers["id"] for _ in range(2)}
        assert taken == {"job_left-1", "job_held-0"}
        # Then only the held one counts as present: the other would come back only after the
        # visibility timeout
        assert jobs_in_broker(client, ["job_left", "job_held"], {"job_held-0", "x-1"}) == {
            "job_held"}
        queue.close()
