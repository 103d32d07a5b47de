"""What workers tell operators: ids and outcomes in logs, a final state in Flower."""

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery

from tests import services
from tests.integration.conftest import Stack, wait_job
from tests.integration.receiver import reply, serve
from tests.integration.test_jobs import read_until

FLOWER_AUTH = ("ops", "s3cret")


def test_a_steps_output_is_not_logged_but_its_id_is(stack: Stack, client: httpx.Client) -> None:
    # Given a step whose output carries tenant data
    secret = f"tenant-data-{uuid.uuid4().hex}"
    job_id = client.post("/v1/jobs", json={"intent": "debug.echo", "wait": 5,
                                           "inputs": {"text": secret}}).json()["job_id"]
    # When it has succeeded
    assert wait_job(client, job_id)["result"] is not None
    # Then the worker's log names the step and its outcome, not what it returned
    log = (stack.logs / "tools.log").read_text()
    assert f"[{job_id}-0] succeeded in" in log
    assert secret not in log


def test_a_called_urls_query_is_not_logged(stack: Stack, client: httpx.Client) -> None:
    # Given an upstream whose URL carries a credential in its query
    secret = f"token-{uuid.uuid4().hex}"
    with serve(reply(200)) as upstream:
        job_id = client.post("/v1/jobs", json={"intent": "debug.http", "inputs": {
            "url": f"{upstream.url}/hook?token={secret}", "body": {}}}).json()["job_id"]
        # When a step has called it
        assert wait_job(client, job_id)["status"] == "succeeded"
        assert upstream.received[0].path.endswith(secret)
    # Then the worker's log names the step and its outcome, not the URL it called
    log = stack.logs / "tools.log"
    deadline = time.monotonic() + 10
    while f"[{job_id}-0] succeeded in" not in log.read_text():
        assert time.monotonic() < deadline, "the step's outcome was never logged"
        time.sleep(0.05)
    assert secret not in log.read_text()


@contextmanager
def start_flower(env: dict[str, str], log: Path) -> Iterator[str]:
    """Flower with basic auth, on the broker `env` names."""
    port = services.free_port()
    env = {**env, "FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH)}
    process = services.Process([str(services.BIN / "orchestrator"), "flower"], env,
                               log)
    url = f"http://127.0.0.1:{port}"
    try:
        services.wait_http(f"{url}/api/workers", expect=401)
        time.sleep(1.0)  # its event consumer connects after the web server is up
        yield url
    finally:
        process.stop()


@pytest.fixture
def flower(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """Flower with basic auth on the stack's broker, the workers sending task events (off
    by default: Flower asks for them every few seconds; asked at once here, as it would)."""
    with start_flower(stack.env, tmp_path / "flower.log") as url:
        control = Celery(broker=stack.env["REDIS_URL"])
        try:
            assert control.control.enable_events(reply=True, timeout=5)
        finally:
            control.close()
        yield url


def test_flower_never_shows_the_brokers_password(stack: Stack, tmp_path: Path) -> None:
    # Given a broker URL with a user and password (an ACL user of the test broker)
    password = f"pw-{uuid.uuid4().hex}"
    url = stack.env["REDIS_URL"]
    redis.Redis.from_url(url).acl_setuser("flower-ops", enabled=True, passwords=[f"+{password}"],
                                          keys=["*"], channels=["*"], commands=["+@all"])
    env = {**stack.env, "REDIS_URL": url.replace("redis://", f"redis://flower-ops:{password}@")}
    # When Flower runs on it and its Broker page is read
    log = tmp_path / "flower.log"
    with start_flower(env, log) as flower_url:
        page = httpx.get(f"{flower_url}/broker", auth=FLOWER_AUTH)
        # Then the page names the broker and its queues, with the password masked
        assert page.status_code == 200 and "redis://flower-ops:**@127.0.0.1" in page.text
        assert password not in page.text
    # And its log does not have it either
    assert password not in log.read_text()


def _flower_state(url: str, task_id: str) -> str | None:
    response = httpx.get(f"{url}/api/task/info/{task_id}", auth=FLOWER_AUTH)
    return response.json().get("state") if response.status_code == 200 else None


def test_a_cancelled_step_ends_revoked_in_flower_without_backend_warnings(
        stack: Stack, client: httpx.Client, flower: str) -> None:
    # Given a running step that Flower has seen start
    job_id = client.post("/v1/jobs", json={"intent": "debug.sleep",
                                           "inputs": {"seconds": 8}}).json()["job_id"]
    read_until(client, job_id, "step_started")
    # When its job is cancelled
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    # Then Flower shows the step REVOKED, not STARTED forever
    deadline = time.monotonic() + 15
    while (state := _flower_state(flower, f"{job_id}-0")) != "REVOKED":
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    # And no worker logged that it could not mark the revoke in a result backend
    logs = "".join(path.read_text() for path in stack.logs.glob("*.log"))
    assert "as revoked in backend" not in logs
