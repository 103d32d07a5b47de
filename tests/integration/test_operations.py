"""The operators' view: which worker ran each step, and retrying a job from its failed step."""

import json
import re
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from typer.testing import CliRunner

from core.settings import get_settings
from tasks.debug import RUNS_KEY
from tests.integration.conftest import Stack, wait_job
from tests.integration.receiver import reply, serve
from workers.cli import app


def test_each_step_names_the_worker_that_ran_it(client: httpx.Client) -> None:
    # Given a finished job of two steps
    job = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {"steps": 2},
                                        "wait": True}).json()
    assert job["status"] == "succeeded", job
    # Then each step names its worker as host:pid/start, and so do its started/succeeded events
    workers = [step["worker"] for step in job["steps"]]
    assert all(w and re.fullmatch(r"[^:]+:\d+/[0-9a-f]{6}", w) for w in workers), workers
    events = client.get(f"/v1/jobs/{job['job_id']}/events").json()
    named = [(e["data"]["index"], e["data"]["worker"]) for e in events
             if e["type"] in ("step_started", "step_succeeded")]
    assert named == [(0, workers[0]), (0, workers[0]), (1, workers[1]), (1, workers[1])]


def _runs(stack: Stack, job_id: str, index: int) -> int:
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    return int(client.get(RUNS_KEY.format(job_id=job_id, index=index)) or 0)


def _deliveries(client: httpx.Client, job_id: str, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while True:
        rows = client.get("/v1/deliveries", params={"job_id": job_id}).json()
        if len(rows) >= count and all(r["status"] == "succeeded" for r in rows):
            return list(rows)
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def test_retry_runs_again_from_the_failed_step(stack: Stack, client: httpx.Client) -> None:
    with serve(reply(200)) as hook:
        # Given a job of three steps whose second fails its first run
        accepted = client.post("/v1/jobs", json={
            "intent": "debug.chain", "inputs": {"steps": 3, "count": True, "fail_step": 2},
            "callback_url": hook.url}).json()
        job_id = accepted["job_id"]
        failed = wait_job(client, job_id)
        assert failed["status"] == "failed", failed
        assert [s["status"] for s in failed["steps"]] == ["succeeded", "failed", "pending"]
        _deliveries(client, job_id, 1)
        # When it is retried
        response = client.post(f"/v1/jobs/{job_id}/retry")
        assert response.status_code == 200, response.text
        job = wait_job(client, job_id)
        # Then it runs on from step 2 and succeeds; step 1 ran once, keeping its output
        assert job["status"] == "succeeded" and job["result"] == {"step": 3, "of": 3}, job
        assert [_runs(stack, job_id, i) for i in range(3)] == [1, 2, 1]
        assert [s["attempts"] for s in job["steps"]] == [1, 2, 1]
        assert job["steps"][0]["output"] == failed["steps"][0]["output"]
        # And a second callback reports the success
        rows = _deliveries(client, job_id, 2)
    assert len(rows) == 2 and len(hook.received) == 2
    types = [e["type"] for e in client.get(f"/v1/jobs/{job_id}/events").json()]
    after = types[types.index("job_retried"):]
    assert types.count("job_retried") == 1 and "job_failed" not in after
    assert {"job_succeeded", "callback_scheduled", "callback_succeeded"} <= set(after)


def test_retry_of_a_job_not_failed_is_409_and_other_tenants_404(
        stack: Stack, client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"t": time.time()},
                                        "wait": True}).json()
    response = client.post(f"/v1/jobs/{job['job_id']}/retry")
    assert response.status_code == 409
    assert "only a failed or cancelled job can be retried" in response.json()["error"]
    with stack.client() as other:
        assert other.post(f"/v1/jobs/{job['job_id']}/retry").status_code == 404


def test_a_cancelled_job_retried_runs_to_the_end(client: httpx.Client) -> None:
    # Given a job cancelled while its first step runs: the cancel revoked its steps' messages
    job_id = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
        "steps": 2, "delay": 1.0}}).json()["job_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert wait_job(client, job_id)["status"] == "cancelled"
    # When it is retried
    assert client.post(f"/v1/jobs/{job_id}/retry").status_code == 200
    # Then its steps run again under the same ids, and it ends succeeded
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert [s["status"] for s in job["steps"]] == ["succeeded", "succeeded"]


@pytest.fixture
def operator_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI's settings pointed at the stack's broker and store, as an operator's would be."""
    for name in ("REDIS_URL", "DATABASE_URL", "WORKER_HEARTBEAT_SECONDS", "WORKER_LOST_AFTER"):
        monkeypatch.setenv(name, stack.env[name])
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def cli(*args: str) -> object:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _tools_queue(views: object) -> dict[str, float]:
    assert isinstance(views, list)
    return next(v for v in views if v["pool"] == "tools")


def _echo(client: httpx.Client, n: int) -> str:
    job_id: str = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {
        "n": n, "t": time.time_ns()}}).json()["job_id"]
    return job_id


def test_queues_show_a_growing_depth_while_workers_are_stopped(
        stack: Stack, client: httpx.Client, operator_env: None) -> None:
    # Given the tools worker stopped (SIGSTOP: it takes nothing more from its queue)
    worker = stack.workers["tools"]
    worker.kill(signal.SIGSTOP)
    try:
        # When jobs are submitted, then more
        first = [_echo(client, n) for n in range(2)]
        before = _tools_queue(cli("queues", "--json"))
        more = [_echo(client, n) for n in range(2, 5)]
        time.sleep(0.2)  # so the oldest message has visibly aged
        after = _tools_queue(cli("queues", "--json"))
        metrics = stack.metrics()
    finally:
        worker.kill(signal.SIGCONT)
    # Then the depth grew by what was sent, and the oldest message has an age
    assert after["depth"] == before["depth"] + 3, (before, after)
    assert after["oldest_age_seconds"] > 0.2 and after["live_workers"] >= 1
    age = re.search(r'orchestrator_queue_oldest_age_seconds\{pool="tools"\} (\S+)', metrics)
    assert age and float(age.group(1)) > 0.2
    # And once the worker runs again, every job ends
    assert all(wait_job(client, job_id)["status"] == "succeeded" for job_id in first + more)


def test_the_jobs_commands_show_and_retry_and_workers_name_the_runner(
        stack: Stack, operator_env: None) -> None:
    key = stack.new_key()
    api = ("--url", stack.url, "--api-key", key)
    with stack.client(key) as client:
        job_id = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
            "steps": 2, "fail_step": 2}}).json()["job_id"]
        assert wait_job(client, job_id)["status"] == "failed"
    # The job's steps name their workers; the list has the job
    shown = cli("jobs", "show", job_id, "--json", *api)
    assert isinstance(shown, dict)
    worker = shown["steps"][0]["worker"]
    assert worker and [s["status"] for s in shown["steps"]] == ["succeeded", "failed"]
    listed = cli("jobs", "list", "--json", *api)
    assert isinstance(listed, list) and [j["job_id"] for j in listed] == [job_id]
    # Retrying it from the CLI runs it to success
    retried = cli("jobs", "retry", job_id, "--json", *api)
    assert isinstance(retried, dict) and retried["status"] in ("queued", "running", "succeeded")
    with stack.client(key) as client:
        assert wait_job(client, job_id)["status"] == "succeeded"
    again = CliRunner().invoke(app, ["jobs", "retry", job_id, *api])
    assert again.exit_code == 1 and "only a failed or cancelled job" in again.output
    # The worker that ran the step is live, consuming the tools pool
    workers = cli("workers", "--json")
    assert isinstance(workers, list)
    assert "tools" in next(w for w in workers if w["worker"] == worker)["pools"]


def test_metrics_count_step_durations_job_latency_and_deliveries(
        stack: Stack, client: httpx.Client) -> None:
    with serve(reply(200)) as hook:
        job_id = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {"steps": 2},
                                               "callback_url": hook.url}).json()["job_id"]
        wait_job(client, job_id)
        _deliveries(client, job_id, 1)
    for line in ('orchestrator_callback_deliveries_total{outcome="succeeded"}',
                 'orchestrator_step_duration_seconds_bucket{intent="debug.chain.link",le="+Inf"}',
                 'orchestrator_job_latency_seconds_bucket{intent="debug.chain",le="+Inf"}'):
        metrics = stack.metrics_with(line)
    for family, intent in (("orchestrator_step_duration_seconds", "debug.chain.link"),
                           ("orchestrator_job_latency_seconds", "debug.chain")):
        count = re.search(rf'{family}_count\{{intent="{re.escape(intent)}"\}} (\S+)', metrics)
        assert count and float(count.group(1)) >= 1, family
        assert f'{family}_bucket{{intent="{intent}",le="+Inf"}}' in metrics
    delivered = re.search(r'orchestrator_callback_deliveries_total\{outcome="succeeded"\} (\S+)',
                          metrics)
    assert delivered and float(delivered.group(1)) >= 1
