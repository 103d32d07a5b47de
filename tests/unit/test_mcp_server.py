"""Jobs as MCP tool answers and tasks (no services needed)."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.mcp_server import Tasks, call_result, expired, task_of, tool_name, tool_names, ttl_of

DAY_MS = 24 * 3600 * 1000
MCP_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def job(status: str, **fields: Any) -> dict[str, Any]:
    return {"job_id": "job_1", "status": status, "created_at": "2026-11-23T10:00:00Z",
            "started_at": None, "finished_at": None, "result": None, "error": None,
            "links": {"self": "/v1/jobs/job_1"}, **fields}


@pytest.mark.parametrize(("status", "task"), [
    ("queued", "working"), ("running", "working"), ("waiting", "working"),
    ("awaiting_approval", "input_required"), ("succeeded", "completed"),
    ("failed", "failed"), ("cancelled", "cancelled")])
def test_a_jobs_status_maps_to_a_task_status(status: str, task: str) -> None:
    assert task_of(job(status), DAY_MS).status == task


def test_a_held_job_says_why_it_waits() -> None:
    held = task_of(job("awaiting_approval", pending={"reason": "drops a table"}),
                   DAY_MS)
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
    assert Tasks(None, DAY_MS).handles(message) is handled  # type: ignore[arg-type]


LONG = "tool." + "a" * 80


@pytest.mark.parametrize(("intent", "name"), [
    ("memory.search", "memory_search"),
    ("mcp.time.get_current_time", "mcp__time__get_current_time"),
    ("ssh.exec.peek", "ssh_exec_peek"),
    ("tool.my-tool", "tool_my-tool"),
], ids=["builtin", "mcp-tool", "dotted", "dash-kept"])
def test_a_tool_name_is_one_mcp_clients_accept(intent: str, name: str) -> None:
    assert tool_name(intent) == name and MCP_NAME.match(name)


def test_a_long_name_is_cut_with_a_hash_and_clashing_names_stay_unique() -> None:
    # Given intents whose names are too long or clean to the same name
    intents = [LONG, LONG + "b", "tool.a_b", "tool.a.b", "memory.search"]
    # When they are named for MCP clients
    names = tool_names(intents)
    # Then every name is valid, distinct, and maps back to its own intent
    assert all(MCP_NAME.match(name) for name in names)
    assert sorted(names.values()) == sorted(intents)
    assert names["tool_a_b"] == "tool.a.b" and names["memory_search"] == "memory.search"
    assert len(tool_name(LONG)) == 64 and tool_name(LONG) != tool_name(LONG + "b")


@pytest.mark.parametrize(("asked", "ttl"), [
    (60_000, 60_000), (10 * DAY_MS, DAY_MS), (None, DAY_MS), (0, DAY_MS)],
    ids=["honoured", "capped", "none-asked", "zero"])
def test_a_task_keeps_the_ttl_it_asked_for_capped(asked: int | None, ttl: int) -> None:
    context = {"mcp_task_ttl_ms": asked} if asked is not None else {}
    assert ttl_of(job("running", context=context), DAY_MS) == ttl
    assert task_of(job("running", context=context), DAY_MS).ttl == ttl


def test_a_task_past_its_ttl_has_expired() -> None:
    created = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    assert expired(job("succeeded", created_at=created, context={"mcp_task_ttl_ms": 1000}),
                   DAY_MS)
    assert not expired(job("succeeded", created_at=created,
                           context={"mcp_task_ttl_ms": 60_000}), DAY_MS)
