"""Jobs survive workers killed with SIGKILL: the ledger, runner heartbeats and the sweeper."""

import signal
import subprocess
import time

import httpx

from core import store
from tasks.intents import REGISTRY
from tests.integration.conftest import VISIBILITY_TIMEOUT, Stack, wait_job


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def replace_killed_tools_worker(stack: Stack) -> None:
    """SIGKILL the tools worker (and any children), then start a new one."""
    worker = stack.workers["tools"]
    orphans = children(worker.pid)
    worker.kill(signal.SIGKILL)
    for pid in orphans:
        subprocess.run(["kill", "-9", str(pid)])
    worker.stop()
    stack.start_worker("tools", ["tools"])


def test_jobs_finish_when_the_whole_worker_is_killed(stack: Stack, client: httpx.Client) -> None:
    # Given jobs queued and running on the tools worker
    ids = [client.post("/v1/jobs", json={"intent": "debug.sleep",
                                         "inputs": {"seconds": 0.3 + i / 1000}}).json()["job_id"]
           for i in range(12)]
    time.sleep(0.5)
    # When the worker's main process is SIGKILLed and a new worker starts
    replace_killed_tools_worker(stack)
    # Then every job still succeeds once its message is redelivered
    jobs = [wait_job(client, job_id, timeout=VISIBILITY_TIMEOUT + 40) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * len(ids)
    stack.wait_ready()


def test_a_hundred_jobs_survive_a_killed_worker_and_none_runs_twice(
        stack: Stack, client: httpx.Client) -> None:
    # Given 100 short jobs in flight
    ids = [client.post("/v1/jobs", json={"intent": "debug.chain",
                                         "inputs": {"steps": 2, "delay": 0.01 + i / 1e6}}
                       ).json()["job_id"] for i in range(100)]
    time.sleep(0.3)
    # When the tools worker and its children are SIGKILLed mid-run and a new one starts
    replace_killed_tools_worker(stack)
    # Then all 100 end, and no step that finished was run again
    jobs = [wait_job(client, job_id, timeout=VISIBILITY_TIMEOUT + 60) for job_id in ids]
    assert {j["status"] for j in jobs} == {"succeeded"}
    for job in jobs:
        events = client.get(f"/v1/jobs/{job['job_id']}/events").json()
        finished = [e["data"]["index"] for e in events if e["type"] == "step_succeeded"]
        assert finished == [0, 1], (job["job_id"], events)
    stack.wait_ready()


def store_job(stack: Stack, client: httpx.Client, steps: int) -> str:
    """A debug.chain job stored as the API stores it, but never sent to the broker."""
    raw_key = client.headers["authorization"].split()[1]
    intent = REGISTRY.get("debug.chain")
    with stack.db.write() as session:
        tenant_id = store.tenant_for_key(session=session, raw_key=raw_key)
        assert tenant_id is not None
        job, _, _ = store.submit_job(
            session=session, job_id=store.new_job_id(), tenant_id=tenant_id,
            intent="debug.chain", mode="agent", inputs={"steps": steps}, context={},
            callback_url=None,
            steps=intent.plan(intent.inputs.model_validate({"steps": steps})),
            idempotency_key=store.new_job_id(), window=3600)
    return job.id


def test_a_job_committed_but_never_enqueued_is_sent_by_the_sweeper(
        stack: Stack, client: httpx.Client) -> None:
    # Given a job in the store with no message in the broker (the API died in between)
    job_id = store_job(stack, client, steps=1)
    # Then the sweeper sends it once it has been quiet, and it succeeds
    finished = wait_job(client, job_id, timeout=30)
    assert finished["status"] == "succeeded"
    events = client.get(f"/v1/jobs/{job_id}/events").json()
    assert [e["type"] for e in events][:2] == ["job_queued", "job_requeued"]
    assert events[1]["data"]["index"] == 0


def test_a_chain_whose_next_message_was_lost_goes_on_without_repeating_a_step(
        stack: Stack, client: httpx.Client) -> None:
    # Given a job whose first step finished and whose second step's message is gone
    job_id = store_job(stack, client, steps=2)
    with stack.db.write() as session:
        store.begin_step(session=session, job_id=job_id, index=0, runner="test:1",
                         max_deliveries=3)
        store.finish_step(session=session, job_id=job_id, index=0, output={"from": "before"})
    # Then the sweeper sends the chain on from step 1, and step 0 is not run again
    finished = wait_job(client, job_id, timeout=30)
    assert finished["status"] == "succeeded"
    assert finished["steps"][0]["output"] == {"from": "before"}
    assert finished["steps"][0]["attempts"] == 1 and finished["steps"][1]["attempts"] == 1
    events = client.get(f"/v1/jobs/{job_id}/events").json()
    requeued = [e["data"]["index"] for e in events if e["type"] == "job_requeued"]
    assert requeued == [1]


def test_a_long_step_is_not_taken_for_a_lost_one(stack: Stack, client: httpx.Client) -> None:
    # Given a step quiet for longer than ORCHESTRATOR_LOST_AFTER and two checks after it (2 s
    # + 2 × 2/3 s), but shorter than the visibility timeout (6 s: the broker would redeliver it)
    job_id = client.post("/v1/jobs", json={"intent": "debug.sleep",
                                           "inputs": {"seconds": 4.5}}).json()["job_id"]
    # Then its message, held unacknowledged by the worker, keeps the sweeper away
    finished = wait_job(client, job_id, timeout=30)
    assert finished["status"] == "succeeded" and finished["steps"][0]["attempts"] == 1
    events = [e["type"] for e in client.get(f"/v1/jobs/{job_id}/events").json()]
    assert "job_requeued" not in events
