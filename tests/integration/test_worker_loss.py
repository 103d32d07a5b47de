"""Jobs survive workers killed with SIGKILL: the ledger, runner heartbeats and the sweeper."""

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery
from sqlalchemy import select

from core.store.ledger import begin_step, finish_step
from core.store.submission import submit_job
from core.store.tables import STEPS, NextStep, new_job_id, step_task_id
from core.store.tenants import tenant_for_key
from tasks.debug import RUNS_KEY
from tasks.engine.chain import send_step
from tasks.engine.heartbeat import runner_alive
from tasks.intents import REGISTRY
from tests import services
from tests.integration.conftest import LOST_AFTER, VISIBILITY_TIMEOUT, Stack, wait_job


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def kill_tools_worker(stack: Stack) -> None:
    """SIGKILL the tools worker (and any children)."""
    worker = stack.workers["tools"]
    orphans = children(worker.pid)
    worker.kill(signal.SIGKILL)
    for pid in orphans:
        subprocess.run(["kill", "-9", str(pid)])
    worker.stop()


def replace_killed_tools_worker(stack: Stack) -> None:
    """SIGKILL the tools worker (and any children), then start a new one."""
    kill_tools_worker(stack)
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


def runs(stack: Stack, job_id: str, index: int) -> int:
    """How many times the step really ran (it counts itself in Redis)."""
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    return int(client.get(RUNS_KEY.format(job_id=job_id, index=index)) or 0)


@pytest.mark.faults
def test_a_hundred_jobs_survive_a_killed_worker_and_no_finished_step_runs_again(
        stack: Stack, client: httpx.Client) -> None:
    # Given 100 short two-step jobs in flight whose steps count their own runs
    ids = [client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
        "steps": 2, "delay": 0.05 + i / 1e6, "count": True}}).json()["job_id"]
        for i in range(100)]
    time.sleep(0.5)
    # When the tools worker is SIGKILLed mid-run and a new one starts
    replace_killed_tools_worker(stack)
    # Then all 100 end, and no step ran more often than the ledger let it start: a finished
    # step that ran again would have run more often than it was started (one started and
    # killed before its handler counted itself ran less often)
    jobs = [wait_job(client, job_id, timeout=VISIBILITY_TIMEOUT + 60) for job_id in ids]
    assert {j["status"] for j in jobs} == {"succeeded"}
    for job in jobs:
        for step in job["steps"]:
            assert 1 <= runs(stack, job["job_id"], step["index"]) <= step["attempts"], job
    stack.wait_ready()


def test_a_killed_workers_running_step_is_sent_again_within_a_minute(
        stack: Stack, client: httpx.Client) -> None:
    # Given a step running on the tools worker
    job_id = client.post("/v1/jobs", json={"intent": "debug.sleep",
                                           "inputs": {"seconds": 2}}).json()["job_id"]
    wait_running(client, job_id)
    killed_at = time.monotonic()
    # When the worker process is SIGKILLed (its message stays unacknowledged in the broker)
    replace_killed_tools_worker(stack)
    # Then the sweeper sees its heartbeat stop and sends the step again, long before the
    # broker's visibility timeout would
    job = wait_job(client, job_id, timeout=VISIBILITY_TIMEOUT - 10)
    assert job["status"] == "succeeded" and job["steps"][0]["attempts"] == 2
    assert time.monotonic() - killed_at < LOST_AFTER + 20
    events = client.get(f"/v1/jobs/{job_id}/events").json()
    requeued = [e for e in events if e["type"] == "step_requeued"]
    assert len(requeued) == 1 and "stopped" in requeued[0]["data"]["reason"]
    stack.wait_ready()


def wait_running(client: httpx.Client, job_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_step_that_kills_its_worker_fails_as_poison(stack: Stack, client: httpx.Client) -> None:
    # Given a step that SIGKILLs the (prefork) process running it, every time
    job_id = client.post("/v1/jobs", json={"intent": "debug.crash"}).json()["job_id"]
    # Then after ORCHESTRATOR_MAX_STEP_DELIVERIES deliveries a real worker fails it as poison
    job = wait_job(client, job_id, timeout=120)
    assert job["status"] == "failed" and "failed as poison" in job["error"], job["error"]
    assert job["steps"][0]["attempts"] == 6
    stack.wait_ready()


def test_a_duplicate_delivery_of_a_running_step_never_runs_it(
        stack: Stack, client: httpx.Client) -> None:
    # Given a running step that counts its runs
    job_id = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
        "steps": 1, "delay": 1.0, "count": True}}).json()["job_id"]
    wait_running(client, job_id)
    # When its message is delivered again while it runs, and again after it finished
    send_step(celery_app_for(stack), NextStep(job_id, 0, "debug.chain.link", "tools"))
    job = wait_job(client, job_id)
    send_step(celery_app_for(stack), NextStep(job_id, 0, "debug.chain.link", "tools"))
    time.sleep(1.0)
    # Then the step ran once: both verdicts were "skip" or "done", never "run"
    assert job["status"] == "succeeded" and job["steps"][0]["attempts"] == 1
    assert runs(stack, job_id, 0) == 1


def runner_of(stack: Stack, job_id: str, index: int) -> str:
    with stack.db.read() as session:
        runner = session.execute(select(STEPS.c.runner).where(
            STEPS.c.job_id == job_id, STEPS.c.index == index)).scalar_one()
    return str(runner or "")


def pid_of(runner: str) -> int:
    """The process of a runner id (host:pid/start)."""
    return int(runner.split(":")[1].split("/")[0])


def send_to_other_process(stack: Stack, job_id: str, index: int) -> None:
    """Deliver the step's message again through the flow queue: the `others` worker, an OS
    process apart from the tools worker, takes it (the ledger, not the queue, says what runs)."""
    send_step(celery_app_for(stack), NextStep(job_id, index, "debug.chain.link", "flow"))


def wait_logged(log: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text} never in {log}"
        time.sleep(0.05)


@pytest.mark.faults
def test_a_duplicate_in_another_live_process_never_runs_the_step(
        stack: Stack, client: httpx.Client) -> None:
    # Given a step running on the tools worker that counts its runs
    job_id = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
        "steps": 1, "delay": 2.0, "count": True}}).json()["job_id"]
    wait_running(client, job_id)
    tools = stack.workers["tools"].pid
    assert pid_of(runner_of(stack, job_id, 0)) == tools
    # When its message is delivered again to another live process while it runs
    send_to_other_process(stack, job_id, 0)
    wait_logged(stack.logs / "others.log", f"[{step_task_id(job_id, 0)}] received")
    job = wait_job(client, job_id)
    # Then only the tools worker ran it: the other process judged its runner alive and skipped
    assert job["status"] == "succeeded" and job["steps"][0]["attempts"] == 1
    assert runs(stack, job_id, 0) == 1 and pid_of(runner_of(stack, job_id, 0)) == tools


@pytest.mark.faults
def test_a_duplicate_in_another_process_of_a_dead_runners_step_runs_it_once(
        stack: Stack, client: httpx.Client) -> None:
    # Given no sweeper (its resend would clear the runner: only the liveness check is tested),
    # and a step running on the tools worker, which is then SIGKILLed (not replaced yet)
    assert stack.sweeper is not None
    stack.sweeper.stop()
    job_id = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
        "steps": 1, "delay": 2.0, "count": True}}).json()["job_id"]
    wait_running(client, job_id)
    dead = runner_of(stack, job_id, 0)
    broker = redis.Redis.from_url(stack.env["REDIS_URL"])
    kill_tools_worker(stack)
    try:
        deadline = time.monotonic() + LOST_AFTER + 20
        while runner_alive(broker, dead, LOST_AFTER):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # When its message is delivered again to another process once the runner is dead
        send_to_other_process(stack, job_id, 0)
        job = wait_job(client, job_id, timeout=30)
    finally:
        stack.start_worker("tools", ["tools"])
        stack.start_sweeper()
    # Then that process took it over and ran it, once: 2 runs in all, one before the kill
    assert job["status"] == "succeeded" and job["steps"][0]["attempts"] == 2
    assert pid_of(runner_of(stack, job_id, 0)) == stack.workers["others"].pid
    assert runs(stack, job_id, 0) == 2
    stack.wait_ready()


def celery_app_for(stack: Stack) -> Celery:
    app = Celery(broker=stack.env["REDIS_URL"])
    app.conf.update(task_serializer="json", accept_content=["json"])
    return app


def store_job(stack: Stack, client: httpx.Client, steps: int) -> str:
    """A debug.chain job stored as the API stores it, but never sent to the broker."""
    raw_key = client.headers["authorization"].split()[1]
    intent = REGISTRY.get("debug.chain")
    with stack.db.write() as session:
        tenant_id = tenant_for_key(session=session, raw_key=raw_key)
        assert tenant_id is not None
        job, _, _ = submit_job(
            session=session, job_id=new_job_id(), tenant_id=tenant_id,
            intent="debug.chain", mode="agent", inputs={"steps": steps}, context={},
            callback_url=None,
            steps=intent.plan(intent.inputs.model_validate({"steps": steps})),
            idempotency_key=new_job_id(), window=3600)
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
        begin_step(session=session, job_id=job_id, index=0, runner="test:1",
                         max_deliveries=3)
        finish_step(session=session, job_id=job_id, index=0, output={"from": "before"})
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


def test_steps_a_killed_worker_received_but_never_started_come_back_within_a_minute(
        stack: Stack, client: httpx.Client) -> None:
    # Given a tools worker that runs one step at a time and takes up to four messages, running
    # a long step and holding three more steps it received but has not started (pending in
    # the ledger, no runner; unacknowledged in the broker, where they look alive)
    stack.workers["tools"].stop()
    stack.start_worker("tools", ["tools"], concurrency=1, prefetch=4)
    chain = {"intent": "debug.chain", "inputs": {"steps": 2, "delay": 0.05, "count": True}}
    first = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
        "steps": 1, "delay": 3, "count": True}}).json()["job_id"]
    wait_running(client, first, timeout=30)
    held = [client.post("/v1/jobs", json=chain).json()["job_id"] for _ in range(3)]
    broker = redis.Redis.from_url(stack.env["REDIS_URL"])
    deadline = time.monotonic() + 10
    while broker.llen("tools"):
        assert time.monotonic() < deadline, "the worker did not take the messages"
        time.sleep(0.05)
    killed_at = time.monotonic()
    # When it is SIGKILLed and a new worker starts
    replace_killed_tools_worker(stack)
    # Then every job ends within WORKER_LOST_AFTER and a few sweeps, not after the broker's
    # visibility timeout; the held steps ran exactly once, the interrupted one again
    jobs = [wait_job(client, job_id, timeout=LOST_AFTER + 20) for job_id in [first, *held]]
    elapsed = time.monotonic() - killed_at
    assert [j["status"] for j in jobs] == ["succeeded"] * 4 and elapsed < LOST_AFTER + 20
    assert runs(stack, first, 0) == jobs[0]["steps"][0]["attempts"] == 2
    for job in jobs[1:]:
        assert [(runs(stack, job["job_id"], s["index"]), s["attempts"]) for s in job["steps"]
                ] == [(1, 1), (1, 1)], job
        events = client.get(f"/v1/jobs/{job['job_id']}/events").json()
        requeued = [e["data"] for e in events if e["type"] == "step_requeued"]
        assert len(requeued) == 1, requeued
        assert "before its start was written" in requeued[0]["reason"], requeued
    print(f"held steps back {elapsed:.1f}s after the kill")
    stack.wait_ready()


def start_container_worker(stack: Stack, name: str) -> services.Process:
    """A tools worker as a container runs it: pid 1 in a PID namespace of its own, so a
    restarted one has the same host and pid as the one before it."""
    args = ["unshare", "--pid", "--fork", "--kill-child", str(services.BIN / "orchestrator"),
            "worker", "--concurrency", "1", "--prefetch", "1", "--pool", "tools"]
    return services.Process(args, stack.env, stack.logs / f"{name}.log")


def wait_log(process: services.Process, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{process.log.name} never said {text!r}"
        time.sleep(0.2)


def received(process: services.Process, job_id: str) -> bool:
    return f"[{step_task_id(job_id, 0)}] received" in process.log.read_text(errors="replace")


def warm_up(client: httpx.Client, containers: list[services.Process]) -> None:
    """Have each worker run a step, so each beats as a runner (a worker opens its resources,
    and stamps its runner id, on its first step)."""
    deadline = time.monotonic() + 60
    ran = [False] * len(containers)
    tries = 0
    while not all(ran):
        assert time.monotonic() < deadline, "a worker never took a step"
        # each worker runs one step at a time and holds no other: two at once go one to each
        tries += 1
        ids = [client.post("/v1/jobs", json={"intent": "debug.sleep", "inputs": {
            "seconds": 0.5 + (tries * 10 + n) / 1e6}}).json()["job_id"]
            for n in range(len(containers))]
        assert {wait_job(client, job_id)["status"] for job_id in ids} == {"succeeded"}
        ran = [was or any(received(c, job_id) for job_id in ids)
               for was, c in zip(ran, containers, strict=True)]


CONTAINER_STEP_SECONDS = 5  # long enough to be killed mid-run; it runs again to its end


@pytest.mark.timeout(240)
def test_a_step_of_a_killed_worker_comes_back_when_its_restart_has_the_same_host_and_pid(
        stack: Stack, client: httpx.Client) -> None:
    # Given the tools pool served only by two workers that are each pid 1 in a PID namespace of
    # their own on the same host, both beating as runners (a container restarted within
    # WORKER_LOST_AFTER looks just like this), one of them running a step
    stack.workers.pop("tools").stop()
    containers = [start_container_worker(stack, f"container-{n}") for n in (1, 2)]
    try:
        for container in containers:
            wait_log(container, " ready.")
        warm_up(client, containers)
        job_id = client.post("/v1/jobs", json={"intent": "debug.sleep", "inputs": {
            "seconds": CONTAINER_STEP_SECONDS}}).json()["job_id"]
        wait_running(client, job_id, timeout=30)
        first, second = sorted(containers, key=lambda c: not received(c, job_id))
        assert received(first, job_id) and not received(second, job_id)
        # When the one running it is SIGKILLed
        first.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        # Then the other (same host, pid 1 too) is not taken for the dead one: the step comes
        # back long before the broker's visibility timeout, and runs to its end on it
        job = wait_job(client, job_id, timeout=VISIBILITY_TIMEOUT + 30)
        assert job["status"] == "succeeded" and job["steps"][0]["attempts"] == 2
        assert time.monotonic() - killed_at < LOST_AFTER + 20 + CONTAINER_STEP_SECONDS
        assert received(second, job_id)
        # sent again because its worker stopped beating (with host:pid alone, the other's
        # beats kept the dead one alive: only the lost-message check sent it, by chance)
        events = client.get(f"/v1/jobs/{job_id}/events").json()
        requeued = [e for e in events if e["type"] == "step_requeued"]
        assert len(requeued) == 1 and "stopped" in requeued[0]["data"]["reason"], events
    finally:
        for process in containers:
            process.stop()
        stack.start_worker("tools", ["tools"])
        stack.wait_ready()
