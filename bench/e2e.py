"""End-to-end benchmark: bare Celery and the orchestrator on one broker, in one run.

Run with `make bench` (or `.venv/bin/python bench/e2e.py --help`). Prints p50/p99 latency and
throughput for each and the ratios the targets are stated in.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis
from celery import chain as celery_chain

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import col, func, select  # noqa: E402

from core.db import Database  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.models import TERMINAL, Job, JobStatus, JobStep  # noqa: E402
from core.store.tenants import create_tenant_key  # noqa: E402
from core.vault import Vault, new_key  # noqa: E402
from tests import services  # noqa: E402

CONCURRENCY_PATIENCE = 300.0
LIVE = [status for status in JobStatus if not status.terminal]  # not ended yet
T = TypeVar("T")


SECRET_KEY = new_key()  # the stack's ORCHESTRATOR_SECRET_KEY


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def timed(n: int, fn: Callable[[int], Any], warmup: int = 20) -> list[float]:
    for i in range(warmup):
        fn(-1 - i)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - started)
    return samples


def slow_server(logs: Path) -> tuple[services.Process, str]:
    """The loopback upstream both sides call in the concurrency measure."""
    port = services.free_port()
    process = services.Process([str(services.BIN / "uvicorn"), "bench.slow:app", "--port",
                                str(port), "--log-level", "warning", "--backlog", "4096",
                                "--timeout-keep-alive", "120"],
                               dict(os.environ), logs / "slow.log")
    services.wait_http(f"http://127.0.0.1:{port}/?wait=0")
    return process, f"http://127.0.0.1:{port}/"


def bare_celery(broker_url: str, logs: Path, args: argparse.Namespace,
                slow_url: str) -> dict[str, Any]:
    """Round trips, a drain of no-op tasks, and N tasks each waiting on the slow server."""
    n, drain = args.n, args.jobs
    env = {**os.environ, "BARE_BROKER_URL": broker_url}
    worker = services.Process([str(services.BIN / "celery"), "-A", "bench.bare", "worker", "-Q",
                               "bare", "--pool", "threads", "-c", str(args.threads),
                               "--without-gossip", "--without-mingle",
                               "--loglevel", "WARNING"], env, logs / "bare.log")
    try:
        os.environ["BARE_BROKER_URL"] = broker_url
        from bench import bare

        bare.app.conf.broker_url = bare.app.conf.result_backend = broker_url
        bare.noop.delay(0).get(timeout=60)
        client = redis.Redis.from_url(broker_url)
        if args.concurrency_only:
            return {"concurrent_s": with_cpu(worker, args.concurrent, args.timeline,
                                             lambda: bare_concurrency(client, slow_url, args))}
        if args.callbacks_only:
            return {}
        if args.throughput_only:
            rate, commands = with_cpu(worker, drain, args.timeline,
                                      lambda: bare_drain(client, drain))
            return {"drain_per_s": rate, "commands": commands}
        rtt = timed(n, lambda i: bare.noop.delay(i).get(timeout=10))
        chain5 = timed(max(n // 4, 10), lambda i: celery_chain(
            bare.noop.s(i), *(bare.noop.s() for _ in range(4))).apply_async().get(timeout=10),
            warmup=5)
        rate, commands = bare_drain(client, drain)
        return {"rtt": percentiles(rtt), "chain5": percentiles(chain5),
                "drain_per_s": rate, "commands": commands,
                "concurrent_s": bare_concurrency(client, slow_url, args)}
    finally:
        worker.stop()


def with_cpu(worker: services.Process, tasks: int, shown: bool, measure: Callable[[], T]) -> T:
    """`measure()`; with `shown` (`--timeline`), the CPU bare Celery's worker used meanwhile
    is printed, in all and per task."""
    cpu = cpu_seconds(worker.pid)
    result = measure()
    if shown:
        used = cpu_seconds(worker.pid) - cpu
        print(f"bare Celery's worker used {used:.2f} CPU seconds "
              f"({used / tasks * 1000:.2f} ms a task)")
    return result


def redis_commands(client: redis.Redis, per: int = 0, label: str = "") -> int:
    """Commands the broker ran since its statistics were last reset (`INFO commandstats`); with
    `per`, each command's count divided by it is printed (BENCH_COMMANDS=1)."""
    stats = {name.removeprefix("cmdstat_"): int(entry["calls"])
             for name, entry in client.info("commandstats").items()
             if name not in ("cmdstat_info", "cmdstat_config|resetstat")}
    if per and os.environ.get("BENCH_COMMANDS"):
        print(f"{label} Redis commands per job/task:", ", ".join(
            f"{name} {calls / per:.2f}" for name, calls in sorted(
                stats.items(), key=lambda item: -item[1])), file=sys.stderr)
    return sum(stats.values())


def bare_drain(client: redis.Redis, tasks: int) -> tuple[float, float]:
    """Tasks/s from the first send until `tasks` no-op tasks have run, and broker commands per
    task."""
    from bench import bare

    client.delete(bare.COUNTER)
    client.config_resetstat()
    started = time.perf_counter()
    for i in range(tasks):
        bare.count.delay(i)
    while int(client.get(bare.COUNTER) or 0) < tasks:
        time.sleep(0.005)
    rate = tasks / (time.perf_counter() - started)
    return rate, redis_commands(client, tasks, "bare") / tasks


def bare_concurrency(client: redis.Redis, slow_url: str, args: argparse.Namespace) -> float:
    """Seconds from the first send until N tasks that each wait W s on the server are done."""
    from bench import bare

    client.delete(bare.HTTP_COUNTER, bare.HTTP_FAILED)
    url = f"{slow_url}?wait={args.wait}"
    started = time.perf_counter()
    for _ in range(args.concurrent):
        bare.http.delay(url)
    while int(client.get(bare.HTTP_COUNTER) or 0) < args.concurrent:
        if time.perf_counter() - started > CONCURRENCY_PATIENCE:
            raise RuntimeError("bare Celery's tasks did not all end")
        time.sleep(0.005)
    if failed := int(client.get(bare.HTTP_FAILED) or 0):
        raise RuntimeError(f"{failed} bare Celery tasks failed (see bare.log)")
    return time.perf_counter() - started


class Orchestrator:
    """The stack under test: API and a tools worker on their own broker db and job store."""

    def __init__(self, broker_url: str, database_url: str, logs: Path,
                 args: argparse.Namespace) -> None:
        self.batch = args.batch
        self.broker = redis.Redis.from_url(broker_url)
        upgrade(database_url)
        self.db = Database(database_url)
        with self.db.write() as session:
            _, self.key = create_tenant_key(session=session, vault=Vault([SECRET_KEY]),
                                            tenant_name="bench")
        port = services.free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "REDIS_URL": broker_url, "DATABASE_URL": database_url,
               "API_PORT": str(port), "WORKER_HEARTBEAT_SECONDS": "1",
               "CALLBACK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
               "ORCHESTRATOR_SECRET_KEY": SECRET_KEY,
               "ORCHESTRATOR_EXPOSED_INTENTS": '["*"]',  # the debug intents it submits
               # The rate limiter runs (its cost is measured) with limits no measure reaches.
               "RATE_LIMIT_KEY_RATE": "1000000", "RATE_LIMIT_KEY_BURST": "1000000",
               "RATE_LIMIT_TENANT_RATE": "1000000", "RATE_LIMIT_TENANT_BURST": "1000000",
               "API_WORKERS": str(args.api_workers)}
        self.env, self.logs, self.profile = env, logs, args.profile
        self.timeline = args.timeline
        self.spies: list[subprocess.Popen[bytes]] = []
        self.processes: list[services.Process] = []
        try:  # a stack that does not come up is stopped, not left running
            self.tools = [services.start_worker(env, ["tools"], logs / f"tools{n}.log",
                                                args.threads) for n in range(args.tools_workers)]
            self.processes += self.tools
            self.api = services.start_api(env, logs / "api.log")
            self.processes += [self.api, services.start_worker(
                env, ["llm", "memory", "flow"], logs / "others.log", 4)]
            self.callbacks_worker = self._start_callbacks()
            self.processes.append(self.callbacks_worker)
            services.wait_http(f"{self.url}/ready", timeout=60)
        except BaseException:
            for process in self.processes:
                process.stop()
            raise
        self.processes.remove(self.callbacks_worker)  # restarted by a measure: closed apart
        self.http = httpx.Client(base_url=self.url, timeout=30,
                                 headers={"Authorization": f"Bearer {self.key}"})

    def _start_callbacks(self) -> services.Process:
        worker = services.start_worker(self.env, ["callbacks"], self.logs / "callbacks.log", 4)
        if self.profile:  # the drain of the backlog (the worker started for it)
            self.spies.append(spy(worker, Path(self.profile) / "callbacks.svg"))
        return worker

    def close(self) -> None:
        self.http.close()
        for process in [*self.processes, self.callbacks_worker]:
            process.stop()
        for running in self.spies:
            running.wait(timeout=60)
        self.db.dispose()

    def submit(self, intent: str, inputs: dict[str, Any], wait: bool) -> dict[str, Any]:
        response = self.http.post("/v1/jobs", json={"intent": intent, "inputs": inputs,
                                                    "wait": wait},
                                  headers={"Idempotency-Key": uuid.uuid4().hex})
        return response.json()

    def echo_wait(self, i: int) -> None:
        job = self.submit("debug.echo", {"i": i, "n": uuid.uuid4().hex}, wait=True)
        assert job["status"] == "succeeded", job

    def echo_poll(self, i: int) -> None:
        job_id = self.submit("debug.echo", {"i": i, "n": uuid.uuid4().hex}, False)["job_id"]
        while self.http.get(f"/v1/jobs/{job_id}").json()["status"] != "succeeded":
            time.sleep(0.002)

    def echo_sse(self, i: int) -> None:
        job_id = self.submit("debug.echo", {"i": i, "n": uuid.uuid4().hex}, False)["job_id"]
        self._stream_until_done(job_id)

    def chain_sse(self, i: int) -> None:
        job_id = self.submit("debug.chain", {"steps": 5}, False)["job_id"]
        self._stream_until_done(job_id)

    def _stream_until_done(self, job_id: str) -> None:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events",
                              headers={"Accept": "text/event-stream"}) as response:
            for line in response.iter_lines():
                if line.startswith("event: job_succeeded"):
                    return
        raise RuntimeError(f"job {job_id} did not succeed")

    def throughput(self, jobs: int, clients: int) -> tuple[float, float]:
        """Jobs/s from the first submission to the last job's end, `clients` submitting, and
        broker commands per job."""
        tag = uuid.uuid4().hex
        self.broker.config_resetstat()
        cpu = self._cpu()
        started = time.perf_counter()
        ids = self.submit_many(jobs, clients, lambda i: ("debug.echo", {"i": i, "tag": tag}))
        while not self._all_done(ids):
            time.sleep(0.01)
        rate = jobs / (time.perf_counter() - started)
        self._print_cpu(cpu, jobs)
        return rate, redis_commands(self.broker, jobs, "orchestrator") / jobs

    def concurrency(self, jobs: int, url: str, clients: int = 64) -> tuple[float, float]:
        """Seconds from the first submit until N `debug.http` jobs that each wait on the slow
        server are terminal, and how long submitting them took."""
        cpu = self._cpu()
        started = time.perf_counter()
        ids = self.submit_many(jobs, clients,
                               lambda i: ("debug.http", {"url": url, "body": {"i": i}}))
        submitted = time.perf_counter() - started
        while not self._all_done(ids):
            if time.perf_counter() - started > CONCURRENCY_PATIENCE:
                raise RuntimeError("the debug.http jobs did not all end")
            time.sleep(0.01)
        failed = self._failed(ids)
        if failed:
            raise RuntimeError(f"{failed} debug.http jobs failed")
        if self.timeline:
            print(timeline(self.db, ids))
            self._print_cpu(cpu, jobs)
        return time.perf_counter() - started, submitted

    def _cpu(self) -> list[float]:
        """Each process's CPU seconds so far (only with `--timeline`)."""
        return [cpu_seconds(p.pid) for p in self.processes] if self.timeline else []

    def _print_cpu(self, before: list[float], jobs: int) -> None:
        if not self.timeline:
            return
        used = {p.log.stem: cpu_seconds(p.pid) - was  # tools0, api, others
                for p, was in zip(self.processes, before, strict=True)}
        print("  CPU seconds used meanwhile: " + ", ".join(
            f"{name} {seconds:.2f} ({seconds / jobs * 1000:.2f} ms a job)"
            for name, seconds in used.items()))

    def callbacks(self, jobs: int, hook: str, clients: int) -> tuple[float, float]:
        """Signed callbacks a second to the loopback receiver, two ways: `jobs` jobs with a
        callback while they run (bounded by how fast jobs end), and a backlog of `jobs` due
        deliveries (their jobs ended while the callbacks worker was stopped) drained by a
        callbacks worker started then; each from the first callback received to the last."""
        live = self._callbacks_arriving(jobs, hook, lambda: self.submit_many(
            jobs, clients, lambda i: ("debug.echo", {"i": i}), callback=hook))
        self.callbacks_worker.stop()

        def backlog() -> None:
            ids = self.submit_many(jobs, clients, lambda i: ("debug.echo", {"i": i}),
                                   callback=hook)
            while not self._all_done(ids):
                time.sleep(0.05)
            self.callbacks_worker = self._start_callbacks()

        return live, self._callbacks_arriving(jobs, hook, backlog)

    def _callbacks_arriving(self, jobs: int, hook: str, cause: Callable[[], Any]) -> float:
        before = httpx.get(f"{hook}/stats").json()["count"]
        cause()
        deadline = time.perf_counter() + CONCURRENCY_PATIENCE
        while (stats := httpx.get(f"{hook}/stats", params={"since": before}).json())[
                "count"] < before + jobs:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{stats['count'] - before} of {jobs} callbacks arrived")
            time.sleep(0.05)
        return jobs / max(stats["last"] - stats["first"], 1e-3)

    def submit_many(self, jobs: int, clients: int,
                    job: Callable[[int], tuple[str, dict[str, Any]]],
                    callback: str | None = None) -> list[str]:
        """Submit `jobs` jobs from `clients` concurrent HTTP clients; their ids."""

        async def submitter(offset: int, client: httpx.AsyncClient) -> list[str]:
            ids = []
            mine = list(range(offset, jobs, clients))
            step = self.batch or 1
            for start in range(0, len(mine), step):
                sent = [{"intent": intent, "inputs": inputs,
                         "idempotency_key": uuid.uuid4().hex,
                         **({"callback_url": callback} if callback else {})}
                        for intent, inputs in map(job, mine[start:start + step])]
                if self.batch:
                    response = await client.post("/v1/jobs:batch", json={"jobs": sent})
                    ids += [accepted["job_id"] for accepted in response.json()["jobs"]]
                    continue
                key = sent[0].pop("idempotency_key")
                response = await client.post("/v1/jobs", json=sent[0],
                                             headers={"Idempotency-Key": key})
                ids.append(response.json()["job_id"])
            return ids

        async def submit_all() -> list[str]:
            async with httpx.AsyncClient(base_url=self.url, timeout=60, headers={
                    "Authorization": f"Bearer {self.key}"}) as client:
                batches = await asyncio.gather(*(submitter(k, client) for k in range(clients)))
            return [job_id for batch in batches for job_id in batch]

        return asyncio.run(submit_all())

    def _failed(self, ids: list[str]) -> int:
        with self.db.read() as session:
            return int(session.exec(select(func.count()).select_from(Job).where(
                col(Job.id).in_(ids), col(Job.status) != "succeeded")).one())

    def _all_done(self, ids: list[str]) -> bool:
        """Whether every job in `ids` ended. Asked every few ms while a measure runs, so it
        first counts the jobs not ended (the status index: a few rows, and this stack's store
        holds only this run's jobs), and reads `ids` only once none is left: an `IN` of
        15,000 ids each poll took half a core of this process, on the CPU the stack shares."""
        with self.db.read() as session:
            if session.exec(select(func.count()).select_from(Job).where(
                    col(Job.status).in_(LIVE))).one():
                return False
            count = session.exec(select(func.count()).select_from(Job).where(
                col(Job.id).in_(ids), col(Job.status).in_(list(TERMINAL)))).one()
        return int(count) == len(ids)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its waited-for children so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def timeline(db: Database, ids: list[str]) -> str:
    """Where the jobs' time went, from their stored timestamps: when they were stored, their
    steps started and ended (seconds after the first was stored: min, p10, p50, p90, p99,
    max), and how many steps started in each quarter second."""
    with db.read() as session:
        jobs = session.exec(select(Job).where(col(Job.id).in_(ids))).all()
        steps = session.exec(select(JobStep).where(col(JobStep.job_id).in_(ids))).all()
    first = min(job.created_at for job in jobs)

    def after(moments: list[datetime | None]) -> list[float]:
        return sorted((at - first).total_seconds() for at in moments if at is not None)

    def spread(name: str, moments: list[datetime | None]) -> str:
        seconds = after(moments)
        marks = (seconds[int(p * (len(seconds) - 1))] for p in (0, 0.1, 0.5, 0.9, 0.99, 1))
        return f"  {name:<14}" + " ".join(f"{mark:6.3f}" for mark in marks)

    starts = Counter(int(s * 4) for s in after([step.started_at for step in steps]))
    return "\n".join([
        "timeline (s after the first job was stored: min p10 p50 p90 p99 max)",
        spread("stored", [job.created_at for job in jobs]),
        spread("step started", [step.started_at for step in steps]),
        spread("step ended", [step.finished_at for step in steps]),
        f"  steps started per 0.25 s: {[starts[n] for n in range(max(starts) + 1)]}"])


def spy(process: services.Process, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording `process` (and its children) into the flame graph `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(services.BIN / "py-spy"), "record", "--pid", str(process.pid),
                             "--subprocesses", "--rate", "50", "--nonblocking",
                             "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def profiled(stack: Orchestrator, out: Path) -> Iterator[None]:
    """py-spy flame graphs of the API and the first tools worker while the measures run."""
    spies = [spy(process, out / f"{name}.svg")
             for name, process in (("api", stack.api), ("tools", stack.tools[0]))]
    try:
        yield
    finally:
        for recorder in spies:
            recorder.send_signal(2)  # SIGINT: py-spy writes the graph and exits
            recorder.wait(timeout=60)


def measures(stack: Orchestrator, args: argparse.Namespace, slow_url: str) -> dict[str, Any]:
    n, url, per = args.n, f"{slow_url}?wait={args.wait}", max(args.batch, 1)
    senders = max(1, min(64, args.concurrent // per))
    if args.concurrency_only:
        return {"concurrent": stack.concurrency(args.concurrent, url, senders)}
    if args.callbacks_only:
        return {"callbacks_per_s": stack.callbacks(args.callbacks, f"{slow_url}hook", 16)}
    clients = max(1, min(16, args.jobs // per))
    if args.throughput_only:
        rate, commands = stack.throughput(args.jobs, clients)
        return {"jobs_per_s": rate, "commands": commands}
    return {
        "wait": percentiles(timed(n, stack.echo_wait)),
        "sse": percentiles(timed(n, stack.echo_sse)),
        "poll": percentiles(timed(n, stack.echo_poll)),
        "chain5": percentiles(timed(max(n // 4, 10), stack.chain_sse, warmup=5)),
        **dict(zip(("jobs_per_s", "commands"), stack.throughput(args.jobs, clients),
                   strict=True)),
        "concurrent": stack.concurrency(args.concurrent, url, senders),
        "callbacks_per_s": stack.callbacks(args.callbacks, f"{slow_url}hook", clients),
    }


def orchestrator(broker_url: str, database_url: str, logs: Path, args: argparse.Namespace,
                 slow_url: str) -> dict[str, Any]:
    stack = Orchestrator(broker_url, database_url, logs, args)
    try:
        with profiled(stack, Path(args.profile)) if args.profile else nullcontext():
            return measures(stack, args, slow_url)
    finally:
        stack.close()


def report(bare: dict[str, Any], orch: dict[str, Any], args: argparse.Namespace) -> str:
    if args.callbacks_only:
        return callbacks_line(orch, args)
    commands = (f"Redis commands per job: orchestrator {orch['commands']:.1f}, bare Celery "
                f"{bare['commands']:.1f} per task ({orch['commands'] / bare['commands']:.2f}x; "
                "target <= 1.5x)") if "commands" in orch else ""
    if args.throughput_only:
        return (f"{args.api_workers} API process(es), {args.tools_workers} tools worker(s): "
                f"{orch['jobs_per_s']:.0f} jobs/s, bare drain {bare['drain_per_s']:.0f}/s "
                f"({orch['jobs_per_s'] / bare['drain_per_s']:.2f}x)\n{commands}")
    total, submitted = orch["concurrent"]
    how = f", in batches of {args.batch}" if args.batch else ""
    concurrency = (f"{args.concurrent} jobs x {args.wait:g} s wait on a loopback server, "
                   f"{args.threads} threads: bare Celery {bare['concurrent_s']:.2f} s, "
                   f"orchestrator {total:.2f} s from the first submit{how} (submitting took "
                   f"{submitted:.2f} s; target <= 3 s)")
    if args.concurrency_only:
        return concurrency
    rows = [("bare Celery apply_async().get()", *bare["rtt"], None),
            ("bare Celery chain of 5 no-ops, .get()", *bare["chain5"], None),
            ("orchestrator debug.echo, POST wait=true", *orch["wait"], None),
            ("orchestrator debug.echo, POST + SSE", *orch["sse"], None),
            ("orchestrator debug.echo, POST + polling", *orch["poll"], None),
            ("orchestrator debug.chain 5 steps, SSE", *orch["chain5"], None),
            ("bare Celery no-op drain", None, None, bare["drain_per_s"]),
            (f"orchestrator debug.echo jobs, 16 clients{', batches' if args.batch else ''}",
             None, None, orch["jobs_per_s"])]
    lines = ["| measure | p50 ms | p99 ms | per s |", "|---|---|---|---|"]
    for name, p50, p99, rate in rows:
        cells = [f"{v:.2f}" if v is not None else "" for v in (p50, p99)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {f'{rate:.0f}' if rate else ''} |")
    lines.append("")
    lines.append(f"single-step p50 / bare round trip p50: {orch['wait'][0] / bare['rtt'][0]:.2f}x"
                 " (target <= 1.5x)")
    lines.append(f"5-step chain p50 / bare Celery chain of 5 p50: "
                 f"{orch['chain5'][0] / bare['chain5'][0]:.2f}x (target <= 1.2x)")
    lines.append(f"jobs/s / bare drain rate: {orch['jobs_per_s'] / bare['drain_per_s']:.2f}x"
                 " (target >= 0.7x)")
    lines.append(commands)
    lines.append(concurrency)
    lines.append(callbacks_line(orch, args))
    return "\n".join(lines)


def callbacks_line(orch: dict[str, Any], args: argparse.Namespace) -> str:
    live, backlog = orch["callbacks_per_s"]
    return (f"signed callbacks/s to a loopback receiver: a backlog of {args.callbacks} drained "
            f"{backlog:.0f} (target >= 500); {args.callbacks} while their jobs run {live:.0f} "
            "(bounded by jobs/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=300, help="Latency samples per measure.")
    parser.add_argument("--jobs", type=int, default=2000, help="Jobs/tasks for throughput.")
    parser.add_argument("--database-url", default="", help="Job store (default: SQLite temp).")
    parser.add_argument("--concurrent", type=int, default=500,
                        help="Jobs in the concurrency measure.")
    parser.add_argument("--wait", type=float, default=1.0,
                        help="Seconds each of them waits on the loopback server.")
    parser.add_argument("--threads", type=int, default=500,
                        help="Threads of the tools worker and of the bare Celery worker.")
    parser.add_argument("--concurrency-only", action="store_true",
                        help="Run only the concurrency measure.")
    parser.add_argument("--throughput-only", action="store_true",
                        help="Run only the throughput measure (and the bare drain).")
    parser.add_argument("--callbacks-only", action="store_true",
                        help="Run only the signed-callbacks measure.")
    parser.add_argument("--postgres", action="store_true",
                        help="Job store: a throwaway Postgres from the pgserver wheel.")
    parser.add_argument("--api-workers", type=int, default=1, help="API processes.")
    parser.add_argument("--tools-workers", type=int, default=1, help="Tools worker processes.")
    parser.add_argument("--batch", type=int, default=0,
                        help="Submit the throughput and concurrency jobs through "
                        "POST /v1/jobs:batch, this many per request (default: one per POST).")
    parser.add_argument("--callbacks", type=int, default=2000,
                        help="Jobs with a callback in the callbacks measure.")
    parser.add_argument("--timeline", action="store_true",
                        help="Print when the concurrency measure's jobs were stored and their "
                        "steps started and ended, and the CPU each process (and bare Celery's "
                        "worker) used in that measure and the throughput measure.")
    parser.add_argument("--profile", default="",
                        help="Write py-spy flame graphs of the API and a tools worker here.")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    slow, slow_url = slow_server(logs)
    try:
        with services.redis_server() as broker, (
                services.postgres_server() if args.postgres else nullcontext(
                    args.database_url or f"sqlite:///{logs}/bench.db")) as database_url:
            root = broker.url.rsplit("/", 1)[0]
            bare = bare_celery(f"{root}/3", logs, args, slow_url)
            orch = orchestrator(f"{root}/4", database_url, logs, args, slow_url)
    finally:
        slow.stop()
    print(report(bare, orch, args))
    store = "Postgres" if args.postgres or args.database_url.startswith("postgres") else "SQLite"
    print(f"\n(logs in {logs}; {os.cpu_count()} cores; {store}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())})")


if __name__ == "__main__":
    main()
