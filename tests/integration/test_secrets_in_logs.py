"""Secrets stay secret in motion: after a full run, no log, event, job output or metric holds a
secret the run made or used (test_secrets.py checks the job store at rest)."""

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import services
from tests.integration.conftest import (
    METRICS_TOKEN,
    SshServers,
    Stack,
    running_stack,
    wait_job,
)
from tests.integration.llm_server import Reply, Script, plan, scripted_llm
from tests.integration.test_engine import held, waiting
from tests.integration.test_ssh import granted_key

LLM_KEY = f"sk-test-{uuid.uuid4().hex}"
# How each is handed to its tenant, on purpose: the held step's token, the resume URL.
HANDED_OUT = {"step_held": "token", "step_waiting": "resume_url"}


@pytest.fixture(scope="module")
def llm() -> Iterator[tuple[str, Script]]:
    with scripted_llm() as (server, script):
        yield server.url, script


@pytest.fixture(scope="module")
def secret_stack(request: pytest.FixtureRequest, llm: tuple[str, Script],
                 ssh_servers: SshServers) -> Iterator[Stack]:
    """A stack whose model needs a key, with the real sshd's hosts (sqlite: what is logged
    does not depend on the store)."""
    env = {"LLM_BASE_URL": f"{llm[0]}/v1", "LLM_API_KEY": LLM_KEY, "LLM_MODEL": "scripted",
           "SSH_HOSTS": ssh_servers.hosts}
    with running_stack(request, "sqlite", 15, env, name="secrets", split_workers=False,
                       concurrency=8) as stack:
        yield stack


def run(http: httpx.Client, body: dict[str, Any]) -> str:
    answer = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert answer.status_code == 202, answer.text
    job = wait_job(http, answer.json()["job_id"], timeout=60)
    assert job["status"] == "succeeded", job
    return str(job["job_id"])


def rotate(stack: Stack, key_id: str) -> str:
    """`orchestrator keys rotate`: the new key is its last line."""
    done = subprocess.run([str(services.BIN / "orchestrator"), "keys", "rotate", key_id],
                          env=stack.env, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()[-1]


def shown(http: httpx.Client, job_id: str) -> str:
    """The job and its events as the API shows them, less the fields that hand a token out."""
    events = http.get(f"/v1/jobs/{job_id}/events").json()
    for event in events:
        event["data"].pop(HANDED_OUT.get(event["type"], ""), None)
    return json.dumps([http.get(f"/v1/jobs/{job_id}").json(), events])


def test_no_log_event_output_or_metric_holds_a_secret(
        secret_stack: Stack, llm: tuple[str, Script], ssh_servers: SshServers) -> None:
    stack, script = secret_stack, llm[1]
    secrets: dict[str, str] = {"LLM key": LLM_KEY}
    # Given keys made by the store, the API and `keys rotate`
    secrets["first key"] = granted_key(stack)
    with stack.client(secrets["first key"]) as http:
        made = http.post("/v1/keys", json={"name": "ci", "scopes": [
            "jobs:write", "jobs:read", "approve", "admin"]}).json()
    secrets["API-made key"] = made["key"]
    secrets["rotated key"] = rotate(stack, made["id"])
    jobs: list[str] = []
    with stack.client(secrets["rotated key"]) as http:
        # And the webhook secret rotated (the old one still shown while it signs)
        rotated = http.post("/v1/webhook-secret/rotate").json()
        secrets["webhook secret"] = rotated["secret"].removeprefix("whsec_")
        secrets["old webhook secret"] = rotated["previous_secret"].removeprefix("whsec_")
        # And a held step approved, a waiting step resumed
        job_id, pending = held(http, reason="rm -rf", payload={"n": 1})
        secrets["approval token"] = pending["token"]
        assert http.post(f"/v1/jobs/{job_id}/approve",
                         json={"token": pending["token"]}).status_code == 200
        assert wait_job(http, job_id)["status"] == "succeeded"
        resumed, url = waiting(http)
        secrets["resume token"] = url.rsplit("/", 1)[1]
        assert httpx.post(url, json={"answer": 1}).status_code == 200
        assert wait_job(http, resumed)["status"] == "succeeded"
        jobs += [job_id, resumed]
        # And an SSH step with the host's key file, and a prompt the model (with its key) plans
        jobs.append(run(http, {"intent": "ssh.exec.peek",
                               "inputs": {"host": "box", "command": "uptime"}}))
        script.set(plans=[plan({"intent": "debug.echo", "inputs": {"a": 1}, "why": "look"})],
                answers=[Reply("Echoed.")])
        jobs.append(run(http, {"prompt": "echo something"}))
        # When every log of the run, every job and event shown, and the metrics are read
        texts = {str(path): path.read_text(errors="replace")
                 for path in Path(stack.logs).glob("*.log")}
        texts.update({job: shown(http, job) for job in jobs})
    texts["/metrics"] = httpx.get(f"{stack.url}/metrics", headers={
        "Authorization": f"Bearer {METRICS_TOKEN}"}).text
    private = Path(ssh_servers.box.key_file).read_text().splitlines()[1:-1]
    secrets.update({f"SSH key line {n}": line for n, line in enumerate(private)})
    # Then none of the secrets is in any of them
    assert len(texts) > len(jobs) + 3 and all(len(s) >= 16 for s in secrets.values())
    leaks = [(name, where) for name, secret in secrets.items()
             for where, text in texts.items() if secret in text]
    assert leaks == []
