"""Secrets at rest: after a full run, a copy of the job store gives away no credential."""

import uuid
from typing import Any

import httpx
from sqlalchemy import MetaData, select

from tests.integration.conftest import Stack, wait_job
from tests.integration.receiver import reply, serve
from tests.integration.test_engine import held, waiting
from tests.integration.test_tools import run


def dump(stack: Stack) -> str:
    """Every row of every table of the job store, as text."""
    tables = MetaData()
    tables.reflect(stack.db.engine)
    with stack.db.engine.connect() as connection:
        rows: list[Any] = [row for table in tables.sorted_tables
                           for row in connection.execute(select(table)).all()]
    return "\n".join(repr(tuple(row)) for row in rows)


def test_a_copy_of_the_job_store_holds_no_token_or_tenant_credential(
        stack: Stack, client: httpx.Client) -> None:
    # Given a tool with a bearer header, called through a job
    bearer = f"crm-{uuid.uuid4().hex}"
    with serve(reply(200, {"content-type": "application/json"}, b"{}")) as server:
        registered = client.post("/v1/tools/register", json={
            "name": f"crm-{uuid.uuid4().hex[:6]}", "url": f"{server.url}/contacts",
            "headers": {"authorization": f"Bearer {bearer}"}, "input_schema": {"type": "object"}})
        assert registered.status_code == 201, registered.text
        assert run(client, registered.json()["intent"], {})["status"] == "succeeded"
        assert server.received[0].headers["authorization"] == f"Bearer {bearer}"
    # And a held step approved with the token the job view shows
    job_id, pending = held(client, reason="rm -rf", payload={"n": 1})
    approval = pending["token"]
    assert client.post(f"/v1/jobs/{job_id}/approve", json={"token": approval}).status_code == 200
    assert wait_job(client, job_id)["status"] == "succeeded"
    shown = client.get(f"/v1/jobs/{job_id}/events").json()
    assert [e["data"]["token"] for e in shown if e["type"] == "step_held"] == [approval]
    # And a waiting step resumed at the URL the job view shows
    job_id, url = waiting(client)
    assert httpx.post(url, json={"answer": 1}).status_code == 200
    assert wait_job(client, job_id)["status"] == "succeeded"
    resume_token = url.rsplit("/", 1)[1]
    # And the tenant's webhook secret, made and read
    webhook_secret = client.get("/v1/webhook-secret").json()["secret"]
    # When every table of the job store is dumped
    rows = dump(stack)
    # Then none of them is anywhere in it
    assert job_id in rows  # (the dump did reach the jobs)
    for secret in (bearer, approval, resume_token, webhook_secret.removeprefix("whsec_")):
        assert secret not in rows
