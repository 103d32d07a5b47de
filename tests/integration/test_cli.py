"""The `orchestrator` command against the running stack: submit and watch."""

import io
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from core.settings import get_settings
from core.store.tenants import is_operator, tenant_for_key
from core.watch import watch_job
from tests import services
from tests.integration.conftest import Stack, wait_job
from workers.cli import app


def test_submit_waits_and_prints_the_job(stack: Stack) -> None:
    result = CliRunner().invoke(app, [
        "submit", "debug.chain", "-i", "steps=2", "-i", "delay=0.01", "--wait",
        "--url", stack.url, "--api-key", stack.new_key()])
    assert result.exit_code == 0, result.output
    job = json.loads(result.output)
    assert job["status"] == "succeeded" and len(job["steps"]) == 2


def test_submit_reports_a_bad_request_and_fails(stack: Stack) -> None:
    result = CliRunner().invoke(app, ["submit", "nope.never", "--url", stack.url,
                                      "--api-key", stack.new_key()])
    assert result.exit_code == 1
    assert "Intent 'nope.never' not found" in result.output


def test_watch_follows_a_job_to_its_end(stack: Stack, client: httpx.Client) -> None:
    job_id = client.post("/v1/jobs", json={"intent": "debug.chain",
                                           "inputs": {"steps": 3, "delay": 0.2}}).json()["job_id"]
    screen = io.StringIO()
    code = watch_job(client, job_id, Console(file=screen, width=160))
    assert code == 0
    assert "job_succeeded" in screen.getvalue()


def test_watch_exits_1_for_a_failed_job(client: httpx.Client) -> None:
    job_id = client.post("/v1/jobs", json={"intent": "debug.fail", "inputs": {}}).json()["job_id"]
    assert watch_job(client, job_id, Console(file=io.StringIO())) == 1


def test_keys_create_prints_a_working_key_last(stack: Stack,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", stack.env["DATABASE_URL"])
    monkeypatch.setenv("ORCHESTRATOR_SECRET_KEY", stack.env["ORCHESTRATOR_SECRET_KEY"])
    get_settings.cache_clear()
    try:
        plain = CliRunner().invoke(app, ["keys", "create", "--tenant", "cli-plain"])
        ops = CliRunner().invoke(app, ["keys", "create", "--tenant", "cli-ops", "--operator"])
    finally:
        get_settings.cache_clear()
    assert plain.exit_code == 0 and ops.exit_code == 0, plain.output + ops.output
    lines = plain.output.splitlines()
    assert lines[0].startswith("tenant: ten_") and lines[0].endswith(" (cli-plain)")
    assert lines[2].startswith("webhook secret: whsec_")
    operators = {}
    for result in (plain, ops):
        key = result.output.splitlines()[-1]
        assert httpx.get(f"{stack.url}/v1/jobs", headers={
            "Authorization": f"Bearer {key}"}).status_code == 200
        with stack.db.read() as session:
            tenant = tenant_for_key(session=session, raw_key=key)
            assert tenant is not None
            operators[result is ops] = is_operator(session=session, tenant_id=tenant)
    assert operators == {False: False, True: True}


def test_flowers_metrics_need_its_basic_auth(stack: Stack, tmp_path: Path) -> None:
    # Given Flower started with basic auth on the stack's broker
    port = services.free_port()
    env = {**stack.env, "FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": "ops:s3cret"}
    flower = services.Process([str(services.BIN / "orchestrator"), "flower"], env,
                              tmp_path / "flower.log")
    try:
        services.wait_http(f"http://127.0.0.1:{port}/metrics", expect=401)
        # When /metrics is scraped without and with the credentials
        anonymous = httpx.get(f"http://127.0.0.1:{port}/metrics")
        authorised = httpx.get(f"http://127.0.0.1:{port}/metrics", auth=("ops", "s3cret"))
    finally:
        flower.stop()
    # Then only the operator's credentials see them
    assert anonymous.status_code == 401
    assert authorised.status_code == 200 and "flower_" in authorised.text


def test_submit_wait_on_a_job_that_outlives_the_wait_fails_and_says_watch(stack: Stack) -> None:
    # Given a job longer than the server's sync timeout (8 s in the stack)
    # When it is submitted with --wait
    result = CliRunner().invoke(app, ["submit", "debug.sleep", "-i", "seconds=12", "--wait",
                                      "--url", stack.url, "--api-key", stack.new_key()])
    # Then the command exits 3 and says how to follow the job
    assert result.exit_code == 3, result.output
    assert "after the wait; follow it with: orchestrator watch job_" in result.output


def test_submit_wait_on_a_failed_job_exits_1(stack: Stack) -> None:
    result = CliRunner().invoke(app, ["submit", "debug.fail", "--wait", "--url", stack.url,
                                      "--api-key", stack.new_key()])
    assert result.exit_code == 1, result.output
    assert json.loads(result.output)["status"] == "failed"


DEV_PROCFILE = """\
api: orchestrator api
tools: orchestrator worker --pool tools --concurrency 4
sweeper: orchestrator sweeper
"""


def _said(log: Path, pattern: str, timeout: float = 60) -> re.Match[str]:
    """The first line of `orchestrator dev`'s output matching `pattern`, once it is there."""
    deadline = time.monotonic() + timeout
    while not (found := re.search(pattern, log.read_text(errors="replace"), re.MULTILINE)):
        assert time.monotonic() < deadline, f"no {pattern!r} in:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _submit_all_along(url: str, key: str, stop: threading.Event, answers: list[str]) -> None:
    """POST a debug.echo every 0.2 s until `stop`; each answer's status (or error) in order."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=5) as client:
        while not stop.wait(0.2):
            try:
                answers.append(str(client.post("/v1/jobs", json={
                    "intent": "debug.echo", "inputs": {"n": len(answers)}}).status_code))
            except httpx.HTTPError as exc:
                answers.append(type(exc).__name__)


@pytest.mark.timeout(180)
def test_dev_restarts_a_dead_sweeper_and_worker_while_the_api_answers(tmp_path: Path) -> None:
    # Given `orchestrator dev` running a Procfile of the API, a tools worker and the sweeper
    (tmp_path / "Procfile").write_text(DEV_PROCFILE)
    port = services.free_port()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{services.free_port()}/0",
           "DATABASE_URL": f"sqlite:///{tmp_path}/orchestrator.db", "API_PORT": str(port),
           "WORKER_HEARTBEAT_SECONDS": "1", "PATH": f"{services.BIN}:{os.environ['PATH']}"}
    log = tmp_path / "dev.log"
    dev = services.Process([str(services.BIN / "orchestrator"), "dev"], env, log, cwd=tmp_path)
    answers: list[str] = []
    stop = threading.Event()
    try:
        url = f"http://127.0.0.1:{port}"
        _said(log, rf"^ready: API at {re.escape(url)} .*; pools live: tools$")
        # The screen is quiet: starts go to var/log/supervisor.log, output to var/log/<name>.log
        notes = tmp_path / "var" / "log" / "supervisor.log"
        pids = {name: int(_said(notes, rf"^supervisor \| {name} started \(pid (\d+)\)")[1])
                for name in ("sweeper", "tools")}
        assert "[queues]" in _said(tmp_path / "var/log/tools.log", r"\[queues\]")[0]
        assert "[queues]" not in log.read_text()  # the worker's banner is not on screen
        key = (tmp_path / "var" / "dev-api-key").read_text().strip()
        poller = threading.Thread(target=_submit_all_along, args=(url, key, stop, answers))
        poller.start()
        # When the sweeper and the worker are killed
        for name in ("sweeper", "tools"):
            os.kill(pids[name], signal.SIGKILL)
        # Then each death is said, with the signal and the delay, and each comes back anew
        for name in ("sweeper", "tools"):
            died = _said(log, rf"^supervisor \| {name} \(pid {pids[name]}\) died: killed by "
                              r"SIGKILL after [\d.]+s up; restarting in 1s$")
            assert died
            again = int(_said(notes, rf"^supervisor \| {name} restarted \(pid (\d+)\)")[1])
            assert again != pids[name] and _alive(again)
        # And a job submitted now runs on the restarted worker
        time.sleep(8)  # past the 5-7 s in which one death used to stop everything
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
            job = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"n": -1}})
            assert wait_job(client, job.json()["job_id"], timeout=30)["status"] == "succeeded"
        stop.set()
        poller.join()
        # And every submission along the way was answered
        # (the count is a margin for a busy machine: every answer matters, not how many came)
        assert len(answers) > 10 and set(answers) == {"202"}, answers
        # And Ctrl-C stops every process
        children = [int(pid) for pid in re.findall(r"\(pid (\d+)\)\n", notes.read_text())]
        dev.kill(signal.SIGINT)
        assert dev.popen.wait(timeout=30) == 0
        assert not [pid for pid in children if _alive(pid)]
        assert "stopping 3 processes" in log.read_text()
    finally:
        stop.set()
        dev.stop()
