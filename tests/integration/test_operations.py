"""The operators' view: which worker ran each step, and retrying a job from its failed step."""

import time

import httpx
import redis

from tasks.debug import RUNS_KEY
from tests.integration.conftest import Stack, wait_job
from tests.integration.receiver import reply, serve


def test_each_step_names_the_worker_that_ran_it(client: httpx.Client) -> None:
    # Given a finished job of two steps
    job = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {"steps": 2},
                                        "wait": True}).json()
    assert job["status"] == "succeeded", job
    # Then each step names its worker as host:pid, and so do its started/succeeded events
    workers = [step["worker"] for step in job["steps"]]
    assert all(w and w.rsplit(":", 1)[1].isdigit() for w in workers), workers
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
