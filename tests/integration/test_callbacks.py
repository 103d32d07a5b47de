"""Signed callbacks through the real callbacks pool: retried, verified, never lost."""

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from core import deliveries
from core.models import Job, utcnow
from tests.integration.conftest import Stack, running_stack, wait_job
from tests.integration.receiver import Script, reply, serve

BAD_HOST = "http://" + "a" * 1000 + ".com/hook"


def wait_delivery(client: httpx.Client, job_id: str, status: str,
                  timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = client.get("/v1/deliveries", params={"job_id": job_id}).json()
        if rows and rows[0]["status"] == status:
            return client.get(f"/v1/deliveries/{rows[0]['id']}").json()
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def submit_with_callback(client: httpx.Client, url: str) -> str:
    response = client.post("/v1/jobs", json={"intent": "debug.echo",
                                             "inputs": {"t": time.time_ns()},
                                             "callback_url": url})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def test_failing_receiver_gets_one_success_with_one_webhook_id(client: httpx.Client) -> None:
    # Given a receiver that fails twice, then succeeds
    with serve(Script([(500, {}), (503, {}), (200, {})])) as hook:
        job_id = submit_with_callback(client, hook.url)
        # When the job ends
        wait_job(client, job_id)
        delivery = wait_delivery(client, job_id, "succeeded")
    # Then three attempts share one webhook-id, each signed so standardwebhooks verifies it
    secret = client.get("/v1/webhook-secret").json()["secret"]
    assert [r.headers["webhook-id"] for r in hook.received] == [delivery["id"]] * 3
    for request in hook.received:
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload["data"]["job_id"] == job_id and payload["type"] == "job.succeeded"
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 503, 200]
    events = [e["type"] for e in client.get(f"/v1/jobs/{job_id}/events").json()]
    assert events[-4:] == ["callback_scheduled", "callback_failed", "callback_failed",
                           "callback_succeeded"]


def test_always_failing_receiver_ends_dead_and_redelivers(client: httpx.Client) -> None:
    script = Script([(500, {})])
    with serve(script) as hook:
        job_id = submit_with_callback(client, hook.url)
        dead = wait_delivery(client, job_id, "dead")
        assert dead["attempts"] == 4 and len(hook.received) == 4
        script.steps = [(200, {})]
        again = client.post(f"/v1/deliveries/{dead['id']}/redeliver")
        assert again.status_code == 200
        done = wait_delivery(client, job_id, "succeeded")
    assert done["attempts"] == 5
    assert {r.headers["webhook-id"] for r in hook.received} == {dead["id"]}


def test_a_redirect_is_a_failure_and_never_followed(client: httpx.Client) -> None:
    with serve(reply(200)) as target, \
            serve(reply(302, {"Location": target.url})) as hook:
        job_id = submit_with_callback(client, hook.url)
        dead = wait_delivery(client, job_id, "dead")
    assert target.received == []
    assert all(a["status_code"] == 302 for a in dead["attempt_log"])


def test_private_literal_target_is_refused_at_submit(client: httpx.Client) -> None:
    with serve(reply(200)) as hook:
        url = hook.url.replace("127.0.0.1", "127.0.0.2")
        response = client.post("/v1/jobs", json={"intent": "debug.echo", "callback_url": url})
        assert response.status_code == 422
        assert "callback_url" in response.text
        assert hook.received == []


def test_a_tenant_sees_only_its_deliveries(stack: Stack, client: httpx.Client) -> None:
    with serve(reply(200)) as hook:
        job_id = submit_with_callback(client, hook.url)
        delivery = wait_delivery(client, job_id, "succeeded")
    with stack.client() as stranger:
        assert stranger.get(f"/v1/deliveries/{delivery['id']}").status_code == 404
        assert stranger.get("/v1/deliveries").json() == []
        assert stranger.post(f"/v1/deliveries/{delivery['id']}/redeliver").status_code == 404


def test_rotation_sends_both_signatures(client: httpx.Client) -> None:
    old = client.get("/v1/webhook-secret").json()["secret"]
    new = client.post("/v1/webhook-secret/rotate").json()
    assert new["previous_secret"] == old and new["secret"] != old
    with serve(reply(200)) as hook:
        job_id = submit_with_callback(client, hook.url)
        wait_delivery(client, job_id, "succeeded")
    request = hook.received[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new["secret"]):
        Webhook(secret).verify(request.body, request.headers)


def test_the_callback_hosts_breaker_is_visible_to_its_tenant(stack: Stack,
                                                             client: httpx.Client) -> None:
    with serve(Script([(500, {}), (200, {})])) as hook:
        wait_delivery(client, submit_with_callback(client, hook.url), "succeeded")
    breakers = {b["name"]: b for b in client.get("/v1/breakers").json()
                if b["name"].startswith("callback:")}
    # Then the tenant sees its own breaker of that host and port
    [name] = [n for n in breakers if n.endswith(f":127.0.0.1:{hook.port}")]
    assert name.startswith("callback:ten_")
    assert breakers[name]["state"] == "closed" and breakers[name]["failures_total"] >= 1
    with stack.client() as stranger:
        assert name not in [b["name"] for b in stranger.get("/v1/breakers").json()]
        assert stranger.post(f"/v1/breakers/{name}/reset").status_code == 404
    assert client.post(f"/v1/breakers/{name}/reset").status_code == 200
    metrics = stack.metrics()
    # Then /metrics counts it without naming the tenant's host
    assert "127.0.0.1" not in metrics
    assert 'orchestrator_callback_breakers{state="closed"}' in metrics
    assert 'orchestrator_upstream_failures_total{upstream="callback"}' in metrics


def test_a_delivery_to_an_invalid_host_follows_the_schedule_to_dead(
        stack: Stack, client: httpx.Client) -> None:
    # Given a finished job whose delivery goes to a host no resolver accepts (stored before
    # hosts were checked at submit)
    job_id = client.post("/v1/jobs", json={"intent": "debug.echo", "wait": 5}).json()["job_id"]
    with stack.db.write() as session:
        job = session.get_one(Job, job_id)
        deliveries.schedule(session=session, outcome=deliveries.Outcome(
            job_id=job.id, tenant_id=job.tenant_id, callback_url=BAD_HOST, status="succeeded",
            intent=job.intent, mode=job.mode, result=None, error=None,
            created_at=job.created_at, started_at=job.started_at, finished_at=utcnow()))
    # When the sweeper sends it
    dead = wait_delivery(client, job_id, "dead")
    # Then every attempt of the schedule (0.3 s × 3) was made and recorded, then it stopped
    assert dead["attempts"] == 4
    assert [a["error"][:20] for a in dead["attempt_log"]] == ["invalid callback URL"] * 4


@pytest.fixture(scope="module")
def strict_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A stack that allows no private callback target (the store's backend does not matter)."""
    with running_stack(request, "sqlite", 8, {"CALLBACK_ALLOWED_NETWORKS": "[]"},
                       name="strict", split_workers=False) as running:
        yield running


def test_a_host_resolving_to_a_refused_address_is_dead_at_once(strict_stack: Stack) -> None:
    # Given a callback to a host name (it passes the submit check, which resolves nothing)
    # that resolves to loopback, which this stack does not allow
    with strict_stack.client() as client, serve(reply(200)) as hook:
        job_id = submit_with_callback(client, hook.url.replace("127.0.0.1", "localhost"))
        # When the job ends and its delivery is attempted
        dead = wait_delivery(client, job_id, "dead")
        events = client.get(f"/v1/jobs/{job_id}/events").json()
        breakers = {b["name"]: b for b in client.get("/v1/breakers").json()}
    # Then one attempt was made and refused, the delivery is dead with the reason, like a 410
    assert hook.received == []
    assert dead["attempts"] == 1 and len(dead["attempt_log"]) == 1
    assert "loopback" in dead["attempt_log"][0]["error"]
    assert [e["type"] for e in events][-2:] == ["callback_scheduled", "callback_dead"]
    assert "loopback" in events[-1]["data"]["error"]
    # and the refusal did not count against the host's breaker
    assert [b["failures_total"] for name, b in breakers.items()
            if name.endswith(f":localhost:{hook.port}")] in ([], [0])
