"""The operators' commands: jobs through the API with a key; queues and workers from Redis.

`orchestrator jobs …` acts as a tenant (the key decides whose jobs), exactly like the API.
`orchestrator queues` and `orchestrator workers` are views of the whole deployment, so they read
the broker (and, for the steps each worker runs, the job store) with the process's settings,
like `orchestrator keys create`: an operator runs them where the workers' settings are.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

console = Console()
jobs = typer.Typer(help="Jobs of the key's tenant, through the API.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
UrlOpt = Annotated[str | None, typer.Option(help="API base URL.")]
KeyOpt = Annotated[str | None, typer.Option(help="API key (or ORCHESTRATOR_API_KEY).")]
STEP_COLUMNS = ("index", "intent", "pool", "status", "attempts", "worker", "error")


def _client(url: str | None, api_key: str | None) -> httpx.Client:
    from workers.cli import _client as client

    made: httpx.Client = client(url, api_key)
    return made


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON of a successful answer; an error's message, and exit 1."""
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        console.print(f"{response.status_code}: {message}", markup=False, highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1)
    body: dict[str, Any] = response.json()
    return body


def _table(title: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in columns])
    return table


def _show(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(job))
        return
    console.print(_table(f"{job['job_id']}  {job['intent']}  {job['status']}  "
                         f"{job['progress']:.0%}", STEP_COLUMNS, job["steps"]))
    if job.get("error"):
        console.print(f"error: {job['error']}", markup=False, highlight=False)


@jobs.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    intent: Annotated[str | None, typer.Option(help="Only jobs of this intent.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None,
) -> None:
    """The tenant's jobs, newest first."""
    params = {k: v for k, v in {"status": status, "intent": intent, "limit": limit}.items()
              if v is not None}
    with _client(url, api_key) as client:
        page = _answer(client.get("/v1/jobs", params=params))
    if as_json:
        print(json.dumps(page["items"]))
        return
    console.print(_table("jobs", ("job_id", "intent", "status", "created_at", "duration_ms",
                                  "error"), page["items"]))


@jobs.command("show")
def jobs_show(job_id: str, as_json: JsonOpt = False, url: UrlOpt = None,
              api_key: KeyOpt = None) -> None:
    """A job and its steps, each with the worker (host:pid) that ran it."""
    with _client(url, api_key) as client:
        _show(_answer(client.get(f"/v1/jobs/{job_id}")), as_json)


@jobs.command("cancel")
def jobs_cancel(job_id: str, as_json: JsonOpt = False, url: UrlOpt = None,
                api_key: KeyOpt = None) -> None:
    """Cancel a job that has not ended."""
    with _client(url, api_key) as client:
        _show(_answer(client.post(f"/v1/jobs/{job_id}/cancel")), as_json)


@jobs.command("approve")
def jobs_approve(job_id: str, token: Annotated[str, typer.Option(
        help="The approval token (`pending.token` of `jobs show --json`).")],
        as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Approve a job's held step with its token."""
    with _client(url, api_key) as client:
        _show(_answer(client.post(f"/v1/jobs/{job_id}/approve", json={"token": token})),
              as_json)


@jobs.command("retry")
def jobs_retry(job_id: str, as_json: JsonOpt = False, url: UrlOpt = None,
               api_key: KeyOpt = None) -> None:
    """Run a failed or cancelled job again from its first step that did not succeed."""
    with _client(url, api_key) as client:
        _show(_answer(client.post(f"/v1/jobs/{job_id}/retry")), as_json)


@dataclass
class QueueView:
    """A pool's queue as the broker has it."""

    pool: str
    queue: str
    depth: int
    oldest_age_seconds: float
    live_workers: int


def queues(as_json: JsonOpt = False) -> None:
    """Each pool's queue: messages waiting, the oldest one's age, live workers."""
    import redis

    from core.observations import oldest_age
    from core.settings import get_settings
    from tasks.engine import heartbeat
    from tasks.engine.pools import POOLS

    settings = get_settings()
    client = redis.Redis.from_url(settings.broker.url)
    ttl, now = settings.worker.heartbeat_seconds * 3, time.time()
    views = [QueueView(pool.name, pool.queue, int(client.llen(pool.queue)),
                       round(oldest_age(client, pool.queue, now), 3),
                       len(heartbeat.live_workers(client, pool.name, ttl)))
             for pool in POOLS.values()]
    if as_json:
        print(json.dumps([asdict(view) for view in views]))
        return
    console.print(_table("queues", tuple(QueueView.__dataclass_fields__),
                         [asdict(view) for view in views]))


@dataclass
class WorkerView:
    """A live worker process: host:pid, the pools it consumes, the steps it runs."""

    worker: str
    pools: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)


def _host_pid(name: str) -> str:
    """`pools@host-pid` (the Celery node name `orchestrator worker` gives) as host:pid."""
    host, _, pid = name.partition("@")[2].rpartition("-")
    return f"{host}:{pid}" if host and pid.isdigit() else name


def live_workers() -> list[WorkerView]:
    """The workers whose heartbeats are fresh, with the steps the store says they run."""
    import redis

    from core.db import Database
    from core.settings import get_settings
    from core.store.recovery import running_steps
    from tasks.engine import heartbeat
    from tasks.engine.pools import POOLS

    settings = get_settings()
    client = redis.Redis.from_url(settings.broker.url)
    views: dict[str, WorkerView] = {}
    for pool in POOLS:
        for name in heartbeat.live_workers(client, pool, settings.worker.heartbeat_seconds * 3):
            views.setdefault(_host_pid(name), WorkerView(_host_pid(name))).pools.append(pool)
    for runner in heartbeat.live_runners(client, settings.worker.lost_after):
        views.setdefault(runner, WorkerView(runner))
    db = Database(settings.database.url)
    with db.read() as session:
        for step in running_steps(session=session, started_before=0, limit=10_000):
            views.setdefault(step.runner, WorkerView(step.runner)).running.append(
                f"{step.job_id}/{step.index}")
    db.dispose()
    return sorted(views.values(), key=lambda view: view.worker)


def workers(as_json: JsonOpt = False) -> None:
    """Live workers (host:pid), the pools they consume and the steps they run (job/index)."""
    views = live_workers()
    if as_json:
        print(json.dumps([asdict(view) for view in views]))
        return
    console.print(_table("workers", ("worker", "pools", "running"), [
        {"worker": v.worker, "pools": ", ".join(v.pools), "running": ", ".join(v.running)}
        for v in views]))
