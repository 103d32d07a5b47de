"""`POST /v1/jobs:batch`: many jobs in one request, each its own job, key and result."""

import json
import time
import uuid
from typing import Any

import httpx
import pytest
import redis

from core.settings import get_settings
from core.store.tables import NextStep
from tasks.engine.app import create_celery
from tasks.engine.chain import send_step, send_steps
from tests import services
from tests.integration.conftest import Stack, wait_job

BATCH = "/v1/jobs:batch"


def echo(**inputs: Any) -> dict[str, Any]:
    return {"intent": "debug.echo", "inputs": {"n": uuid.uuid4().hex, **inputs}}


def test_a_batch_runs_each_job_and_a_repeat_answers_the_same_jobs(client: httpx.Client) -> None:
    # Given a batch of three echo jobs, the first and the last with the same key
    key = uuid.uuid4().hex
    jobs = [{**echo(i=0), "idempotency_key": key}, echo(i=1), {**echo(i=2),
                                                              "idempotency_key": key}]
    # When it is submitted
    response = client.post(BATCH, json={"jobs": jobs})
    # Then each job is answered in order; the third is the first, by its key
    assert response.status_code == 202, response.text
    accepted = response.json()["jobs"]
    assert [a["status"] for a in accepted] == ["queued", "queued", "queued"]
    assert accepted[2]["job_id"] == accepted[0]["job_id"] and accepted[2]["deduplicated"]
    assert accepted[1]["job_id"] != accepted[0]["job_id"] and not accepted[1]["deduplicated"]
    # And each job ran on its own inputs, with its own result
    for sent, job in zip(jobs[:2], accepted[:2], strict=True):
        done = wait_job(client, job["job_id"])
        assert done["status"] == "succeeded" and done["result"] == sent["inputs"]
    # And the same batch again answers the same jobs, each deduplicated
    again = client.post(BATCH, json={"jobs": jobs}).json()["jobs"]
    assert [a["job_id"] for a in again] == [a["job_id"] for a in accepted]
    assert all(a["deduplicated"] for a in again)


def test_a_bad_item_refuses_the_batch_naming_it_and_stores_none(client: httpx.Client) -> None:
    # Given a batch whose second job names no registered intent
    jobs = [echo(i=0), {"intent": "debug.nope", "inputs": {}}, echo(i=2)]
    # When it is submitted
    response = client.post(BATCH, json={"jobs": jobs})
    # Then it is refused, naming the item, and no job of it was stored
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("jobs.1: ") and "debug.nope" in response.text
    assert response.json()["field"] == "jobs.1.intent"
    assert client.get("/v1/jobs").json()["items"] == []


def test_an_item_with_bad_inputs_or_shape_is_named(client: httpx.Client) -> None:
    # An item whose inputs break its intent's schema
    bad_inputs = client.post(BATCH, json={"jobs": [echo(), {"intent": "debug.sleep",
                                                            "inputs": {"seconds": "x"}}]})
    assert bad_inputs.status_code == 422 and bad_inputs.json()["error"].startswith(
        "jobs.1.inputs"), bad_inputs.text
    # An item without an intent
    shapeless = client.post(BATCH, json={"jobs": [echo(), echo(), {"inputs": {}}]})
    assert shapeless.status_code == 422 and "jobs.2.intent" in shapeless.json()["error"]
    # More than 1,000 jobs, or none
    for jobs in ([echo()] * 1001, []):
        refused = client.post(BATCH, json={"jobs": jobs})
        assert refused.status_code == 422 and "jobs" in refused.json()["error"], refused.text
    assert client.get("/v1/jobs").json()["items"] == []


def test_a_batch_the_broker_refuses_leaves_nothing_behind(
        stack: Stack, client: httpx.Client, broker: services.BrokerServer) -> None:
    # Given the broker is down
    jobs = [echo(i=0), echo(i=1)]
    broker.stop()
    try:
        # When a batch is submitted
        refused = client.post(BATCH, json={"jobs": jobs})
    finally:
        broker.start()
    # Then it is refused with 503 saying none started, and no job of it can be seen
    assert refused.status_code == 503, refused.text
    assert "2 new jobs of the batch were not started, 0 were" in refused.json()["error"]
    assert client.get("/v1/jobs").json()["items"] == []
    # And the same batch, retried, is accepted and runs
    stack.wait_ready(timeout=60)
    accepted = client.post(BATCH, json={"jobs": jobs}).json()["jobs"]
    assert not any(a["deduplicated"] for a in accepted)
    assert [wait_job(client, a["job_id"])["status"] for a in accepted] == ["succeeded"] * 2


def test_a_batch_of_steps_goes_to_the_broker_in_one_round_trip(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a broker of its own (no other client reads from it) and 300 first steps
    with services.redis_server() as broker:
        monkeypatch.setenv("REDIS_URL", broker.url)
        get_settings.cache_clear()
        try:
            app, client = create_celery(), redis.Redis.from_url(broker.url)
            steps = [NextStep(f"job_{n}", 0, "debug.echo", "tools") for n in range(300)]
            reads = int(client.info("stats")["total_reads_processed"])
            # When they are sent as a batch submission sends them
            send_steps(app, steps)
            # Then all arrived, in order, and the broker read them in fewer reads than one per
            # message. Sent one by one, each message is at least one read: the client waits for
            # its reply before it sends the next (314 reads). A pipeline's bytes come in
            # redis-py's pieces of about 6 KB, which the broker may read as they arrive: about
            # 60 reads for these 300 messages on a loaded machine, fewer on a quiet one.
            reads = int(client.info("stats")["total_reads_processed"]) - reads
            queued = [json.loads(m)["headers"]["id"] for m in client.lrange("tools", 0, -1)]
            assert queued[::-1] == [f"job_{n}-0" for n in range(300)]
            assert reads < len(steps) / 2, f"{reads} reads for {len(steps)} messages"
        finally:
            get_settings.cache_clear()


def test_a_message_whose_job_is_not_in_the_ledger_is_dropped_quietly(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a step message of a job the ledger does not have (a batch whose broker trip
    # failed after its messages arrived: its jobs were removed, the client told to retry)
    job_id = f"job_{uuid.uuid4().hex}"
    monkeypatch.setenv("REDIS_URL", stack.env["REDIS_URL"])
    get_settings.cache_clear()
    try:
        send_step(create_celery(), NextStep(job_id, 0, "debug.echo", "tools"))
    finally:
        get_settings.cache_clear()
    # Then the worker drops it in one line, without an error and its traceback
    log = stack.logs / "tools.log"
    deadline = time.monotonic() + 15
    while f"[{job_id}-0] ignored" not in log.read_text():
        assert time.monotonic() < deadline, "the message was not dropped as ignored"
        time.sleep(0.05)
    lines = [line for line in log.read_text().splitlines() if job_id in line]
    assert not [line for line in lines if "ERROR" in line or "raised" in line], lines
