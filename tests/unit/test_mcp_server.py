"""Jobs as MCP tool answers and tasks (no services needed)."""

from typing import Any

import pytest

from api.mcp_server import Tasks, call_result, task_of


def job(status: str, **fields: Any) -> dict[str, Any]:
    return {"job_id": "job_1", "status": status, "created_at": "2026-11-23T10:00:00Z",
            "started_at": None, "finished_at": None, "result": None, "error": None,
            "links": {"self": "/v1/jobs/job_1"}, **fields}


@pytest.mark.parametrize(("status", "task"), [
    ("queued", "working"), ("running", "working"), ("waiting", "working"),
    ("awaiting_approval", "input_required"), ("succeeded", "completed"),
    ("failed", "failed"), ("cancelled", "cancelled")])
def test_a_jobs_status_maps_to_a_task_status(status: str, task: str) -> None:
    assert task_of(job(status)).status == task


def test_a_held_job_says_why_it_waits() -> None:
    held = task_of(job("awaiting_approval", pending={"reason": "drops a table"}))
    assert held.task_id == "job_1" and held.status_message == "drops a table"
    assert held.poll_interval and held.ttl


def test_a_finished_job_answers_its_result_or_its_error() -> None:
    done = call_result(job("succeeded", result={"a": 1}))
    assert not done.is_error and done.structured_content == {"a": 1}
    assert call_result(job("succeeded", result=[1, 2])).structured_content == {"result": [1, 2]}
    failed = call_result(job("failed", error="step 0 failed: boom"))
    assert failed.is_error and failed.content[0].text == "step 0 failed: boom"  # type: ignore[union-attr]


def test_a_running_job_answers_where_to_follow_it() -> None:
    running = call_result(job("running"))
    assert not running.is_error
    assert running.structured_content == {"job_id": "job_1", "status": "running",
                                          "links": {"self": "/v1/jobs/job_1"}}


@pytest.mark.parametrize(("message", "handled"), [
    ({"method": "tools/call", "params": {"name": "x", "task": {"ttl": 1}}}, True),
    ({"method": "tools/call", "params": {"name": "x"}}, False),
    ({"method": "tasks/get", "params": {"taskId": "job_1"}}, True),
    ({"method": "tasks/result"}, True), ({"method": "tools/list"}, False),
], ids=["task-call", "plain-call", "get", "result", "list-tools"])
def test_only_task_requests_are_answered_in_front_of_the_sdk(message: dict[str, Any],
                                                             handled: bool) -> None:
    assert Tasks(backend=None).handles(message) is handled  # type: ignore[arg-type]
