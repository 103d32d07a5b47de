"""`orchestrator watch`: a rich live view of one job, fed by its SSE stream."""

import json
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from core.models import TERMINAL_EVENTS, EventType


def render(job: dict[str, Any], events: list[dict[str, Any]]) -> Group:
    """The job's steps as a table and its latest events below."""
    steps = Table(title=f"{job['job_id']}  {job['intent']}  [bold]{job['status']}[/]  "
                        f"{job['progress']:.0%}")
    for column in ("#", "intent", "pool", "status", "attempts", "worker", "error"):
        steps.add_column(column)
    for step in job["steps"]:
        steps.add_row(str(step["index"]), step["intent"], step["pool"], step["status"],
                      str(step["attempts"]), step.get("worker") or "", step.get("error") or "")
    log = Table(title="events", show_header=False)
    for event in events[-10:]:
        log.add_row(str(event["id"]), event["type"], json.dumps(event["data"])[:80])
    return Group(steps, log)


def _sse_events(client: httpx.Client, job_id: str) -> Any:
    headers = {"Accept": "text/event-stream"}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                       timeout=None) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:"):
                yield json.loads(line[5:].strip())


def watch_job(client: httpx.Client, job_id: str, console: Console) -> int:
    """Follow the job until its terminal event; returns 0 if it succeeded, else 1."""
    job = client.get(f"/v1/jobs/{job_id}")
    if job.status_code != 200:
        console.print(job.json().get("error", job.text))
        return 1
    events: list[dict[str, Any]] = []
    with Live(render(job.json(), events), console=console) as live:
        for event in _sse_events(client, job_id):
            events.append(event)
            snapshot = client.get(f"/v1/jobs/{job_id}").json()
            live.update(render(snapshot, events))
            if event["type"] in TERMINAL_EVENTS:
                return 0 if event["type"] == EventType.job_succeeded else 1
    return 1
