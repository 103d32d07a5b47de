"""Several machines proven on one: the store, the API and two worker machines as Linux
namespaces on a bridge; a worker machine is deleted mid-run and no job is lost."""

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from core.db import Database
from core.models import EventType, StepStatus
from core.store.tables import EVENTS, STEPS
from tasks.debug import RUNS_KEY
from tasks.engine import heartbeat
from tests import netns, services
from tests.integration.conftest import wait_job

LOST_AFTER = 10.0  # WORKER_LOST_AFTER of this cluster
# ORCHESTRATOR_LOST_AFTER is 3 s: a machine killed between a step's commit and the hand-off of
# the next leaves a job with no message, which the sweeper's lost-job check resends.
SWEEP = 1.0  # CALLBACK_SWEEP_SECONDS: the sweeper's round
SLACK = 5.0  # a loaded machine's scheduling, on top of LOST_AFTER + a sweep
JOBS, STEPS_PER_JOB, DELAY = 16, 2, 3.0

pytestmark = [pytest.mark.skipif(not netns.is_root() and not services.REQUIRED,
                                 reason="network namespaces need root (required in CI)"),
              # 55-65 s in all at load 11-16 on two cores; the cluster's start alone 70 s at load 24
              pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[netns.Cluster]:
    """1 store machine (Valkey, Postgres), 1 API machine (API, sweeper), 2 worker machines."""
    assert netns.is_root(), "network namespaces need root"
    with netns.network(tmp_path_factory.mktemp("netns")) as net:
        running = netns.start_cluster(net, {
            "WORKER_HEARTBEAT_SECONDS": "1", "WORKER_LOST_AFTER": str(LOST_AFTER),
            "CALLBACK_SWEEP_SECONDS": str(SWEEP), "ORCHESTRATOR_LOST_AFTER": "3",
            "POOL_SOFT_TIME_LIMIT": "40",
            "POOL_TIME_LIMIT": "50"})
        for hostname in ("w1", "w2"):
            running.add_worker(hostname, concurrency=8)
        running.wait_api()
        running.wait_workers(["w1", "w2"])
        yield running


def steps_by_host(db: Database, ids: list[str]) -> dict[tuple[str, int], tuple[str, str]]:
    """Each step of the jobs `ids`: its status and the host of its runner (host:pid)."""
    with db.read() as session:
        rows = session.execute(select(STEPS.c.job_id, STEPS.c.index, STEPS.c.status,
                                      STEPS.c.runner).where(STEPS.c.job_id.in_(ids))).all()
    return {(r.job_id, r.index): (r.status, (r.runner or "").split(":")[0]) for r in rows}


def requeued_at(db: Database, ids: list[str]) -> dict[tuple[str, int], datetime]:
    """When each step of the jobs `ids` was first sent again by the sweeper."""
    with db.read() as session:
        rows = session.execute(select(EVENTS.c.job_id, EVENTS.c.data, EVENTS.c.created_at)
                               .where(EVENTS.c.job_id.in_(ids),
                                      EVENTS.c.type == EventType.step_requeued)
                               .order_by(EVENTS.c.seq)).all()
    found: dict[tuple[str, int], datetime] = {}
    for row in rows:
        found.setdefault((row.job_id, row.data["index"]), row.created_at)
    return found


def wait_requeued(db: Database, ids: list[str], orphans: list[tuple[str, int]],
                  since: datetime) -> dict[tuple[str, int], float]:
    """Seconds from `since` until each of `orphans` was sent again (fails past the bound)."""
    deadline = time.monotonic() + LOST_AFTER + SWEEP + SLACK
    while True:
        requeued = requeued_at(db, ids)
        if all(key in requeued for key in orphans):
            return {key: (requeued[key] - since).total_seconds() for key in orphans}
        missing = [key for key in orphans if key not in requeued]
        assert time.monotonic() < deadline, f"steps of the dead machine not sent again: {missing}"
        time.sleep(0.2)


def wait_steps(db: Database, ids: list[str], wanted: set[tuple[str, str]],
               timeout: float = 30) -> None:
    """Until each (status, host) in `wanted` is some step's of the jobs `ids`."""
    deadline = time.monotonic() + timeout
    while not wanted <= set(steps_by_host(db, ids).values()):
        assert time.monotonic() < deadline, f"no steps {wanted}: {steps_by_host(db, ids)}"
        time.sleep(0.1)


def test_machines_reach_each_other_over_the_bridge_only(cluster: netns.Cluster) -> None:
    # Given a service on the host's loopback, which the host itself reaches
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert socket.create_connection(("127.0.0.1", port), timeout=3)
        worker = cluster.net.machines["w1"]
        # Then a worker machine reaches neither it nor the host's bridge address on that port,
        # and reaches the store machine over the bridge
        assert not worker.reaches("127.0.0.1", port)
        assert not worker.reaches(cluster.net.host_address, port)
        assert worker.reaches(cluster.net.machines["store"].address, netns.REDIS_PORT)


def test_worker_machines_share_pids_and_are_told_apart_by_hostname(
        cluster: netns.Cluster) -> None:
    # Given two worker machines, each with its own PID namespace, started alike
    deadline, pids = time.monotonic() + 30, {}
    while set(pids) != {"w1", "w2"} and time.monotonic() < deadline:  # both beat as runners
        time.sleep(0.2)
        runners = heartbeat.live_runners(cluster.redis(), LOST_AFTER)
        pids = {host: pid.split("/")[0] for host, pid in (r.split(":", 1) for r in runners)
                if host in ("w1", "w2")}  # a runner is host:pid (and /a token of its start)
    # Then their workers run under the same pid, and their runner ids (host:pid) differ by host
    assert set(pids) == {"w1", "w2"} and pids["w1"] == pids["w2"], runners


def test_a_deleted_worker_machine_loses_no_job_and_its_steps_come_back_on_the_other(
        cluster: netns.Cluster) -> None:
    db = Database(cluster.env["DATABASE_URL"])
    counts = cluster.redis()
    with httpx.Client(base_url=cluster.url, timeout=30,
                      headers={"Authorization": f"Bearer {cluster.key}"}) as client:
        # Given jobs of two 3-second steps that count their runs, spread over both machines
        ids = [client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
            "steps": STEPS_PER_JOB, "delay": DELAY + i / 1000, "count": True}}).json()["job_id"]
            for i in range(JOBS)]
        # and w2 running some, having finished others (first steps whose jobs go on)
        wait_steps(db, ids, {(StepStatus.running, "w1"), (StepStatus.running, "w2"),
                             (StepStatus.succeeded, "w2")})
        # When the machine w2 is deleted mid-run: its processes killed, its namespace gone
        killed_at = datetime.now(UTC)
        cluster.net.remove("w2")
        before = steps_by_host(db, ids)  # the ledger as w2 left it: nothing of it moves now
        assert (StepStatus.succeeded, "w2") in before.values()
        orphans = [k for k, (status, host) in before.items()
                   if status == StepStatus.running and host == "w2"]
        # Then the dead machine's running steps are sent again within LOST_AFTER + a sweep
        requeued = wait_requeued(db, ids, orphans, killed_at)
        # and every job ends and succeeds, those steps having run to their end on w1
        jobs = [wait_job(client, job_id, timeout=60) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * JOBS
    after = steps_by_host(db, ids)
    assert orphans and all(after[key] == (StepStatus.succeeded, "w1") for key in orphans), after
    assert max(requeued.values()) <= LOST_AFTER + SWEEP + SLACK, requeued
    # and no step ran again once it had succeeded: none ran more often than the ledger started
    # it (a step started on w2 may die before its handler counts itself, so fewer is fine),
    # and those w2 finished ran once
    for job in jobs:
        for step in job["steps"]:
            key = (job["job_id"], step["index"])
            runs = int(counts.get(RUNS_KEY.format(job_id=key[0], index=key[1])) or 0)
            assert 1 <= runs <= step["attempts"], (key, runs, step["attempts"])
            if before[key] == (StepStatus.succeeded, "w2"):
                assert runs == 1, key
    db.dispose()
