"""A worker outlives a long broker outage while it holds work, and the work ends."""

import time
from collections.abc import Iterator

import httpx
import pytest

from tests import services
from tests.integration.conftest import Stack, running_stack, wait_job

OUTAGE_SECONDS = 180  # long enough to pass every reconnect interval kombu grows to (30 s)
STEP_SECONDS = 6


def _all_running(client: httpx.Client, ids: list[str]) -> bool:
    return all(client.get(f"/v1/jobs/{i}").json()["status"] == "running" for i in ids)


@pytest.fixture
def broker() -> Iterator[services.BrokerServer]:
    """A broker of this test's own that keeps its data (AOF) across a restart."""
    with services.redis_server(persist=True) as server:
        yield server


@pytest.fixture
def stack(request: pytest.FixtureRequest, broker: services.BrokerServer) -> Iterator[Stack]:
    """API, sweeper and one worker for every pool, on that broker."""
    with running_stack(request, "sqlite", 1, {}, name="outage", split_workers=False,
                       broker_url=broker.url) as running:
        yield running


@pytest.mark.timeout(OUTAGE_SECONDS + 240)
def test_a_worker_holding_work_outlives_a_three_minute_broker_outage(
        stack: Stack, broker: services.BrokerServer) -> None:
    with stack.client() as client:
        worker = stack.workers["all"]
        # Given a worker holding steps that end while the broker is gone (unacknowledged), and
        # a chain whose second link can only be sent once the broker is back
        ids = [client.post("/v1/jobs", json={"intent": "debug.sleep", "inputs": {
            "seconds": STEP_SECONDS + n / 10}}).json()["job_id"] for n in range(3)]
        ids.append(client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {
            "steps": 2, "delay": STEP_SECONDS}}).json()["job_id"])
        deadline = time.monotonic() + 20
        while not _all_running(client, ids):
            assert time.monotonic() < deadline, "the steps did not all start"
            time.sleep(0.2)
        # When the broker is killed for three minutes, then started again on its AOF
        broker.kill()
        time.sleep(OUTAGE_SECONDS)
        broker.start()
        # Then a job submitted now succeeds
        new = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"n": 1}})
        assert new.status_code == 202, new.text
        assert wait_job(client, new.json()["job_id"], timeout=120)["status"] == "succeeded"
        # And the jobs held during the outage end, and the worker is the same live process
        jobs = [wait_job(client, job_id, timeout=60) for job_id in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 4, [j["error"] for j in jobs]
        assert worker.popen.poll() is None, worker.log.read_text()[-3000:]
        assert "Unrecoverable error" not in worker.log.read_text()
