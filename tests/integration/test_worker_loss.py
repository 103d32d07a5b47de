"""Jobs survive workers killed with SIGKILL: acks_late, reject_on_worker_lost, redelivery."""

import signal
import subprocess
import time

import httpx

from tests.integration.conftest import VISIBILITY_TIMEOUT, Stack, wait_job


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_killed_child_process_is_redelivered(stack: Stack, client: httpx.Client) -> None:
    # Given a step running in a prefork child
    job_id = client.post("/v1/jobs", json={"intent": "debug.sleep",
                                           "inputs": {"seconds": 1.5}}).json()["job_id"]
    deadline = time.monotonic() + 10
    while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # When every child of the tools worker is SIGKILLed
    for pid in children(stack.workers["tools"].pid):
        subprocess.run(["kill", "-9", str(pid)])
    # Then the step is delivered again and the job still succeeds
    job = wait_job(client, job_id, timeout=30)
    assert job["status"] == "succeeded"
    assert job["steps"][0]["attempts"] == 2


def test_jobs_finish_when_the_whole_worker_is_killed(stack: Stack, client: httpx.Client) -> None:
    # Given jobs queued and running on the tools worker
    ids = [client.post("/v1/jobs", json={"intent": "debug.sleep",
                                         "inputs": {"seconds": 0.3 + i / 1000}}).json()["job_id"]
           for i in range(12)]
    time.sleep(0.5)
    # When the worker's main process is SIGKILLed and a new worker starts
    worker = stack.workers["tools"]
    orphans = children(worker.pid)
    worker.kill(signal.SIGKILL)
    for pid in orphans:
        subprocess.run(["kill", "-9", str(pid)])
    worker.stop()
    stack.start_worker("tools", ["tools"])
    # Then every job still succeeds once its message is redelivered
    jobs = [wait_job(client, job_id, timeout=VISIBILITY_TIMEOUT + 40) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * len(ids)
    stack.wait_ready()
