"""Several machines on one (root only): the orchestrator across Linux network namespaces.

`up` runs a cluster until Ctrl-C: a store machine (Valkey and Postgres on its bridge address),
an API machine (the API and the sweeper) and worker machines, each with its own address and
hostname, reaching each other only over a private bridge. `measure` adds worker machines one
by one and measures debug.echo jobs/s and debug.http concurrency (each worker machine calls a
slow server on its own loopback) with 1, 2, 3... of them; it prints a Markdown table.

    sudo .venv/bin/python bench/netns.py measure --help
"""

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import httpx
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.e2e import Orchestrator  # noqa: E402
from core.db import Database  # noqa: E402
from tasks.engine.pools import POOLS  # noqa: E402
from tests import netns  # noqa: E402

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
SETTINGS = {"WORKER_HEARTBEAT_SECONDS": "1", "WORKER_LOST_AFTER": "10",
            "CALLBACK_SWEEP_SECONDS": "1", "ORCHESTRATOR_LOST_AFTER": "10"}


class ClusterClient(Orchestrator):
    """The benchmark's measures (bench/e2e.py) against a cluster started elsewhere."""

    def __init__(self, cluster: netns.Cluster) -> None:  # no processes of its own to start
        self.db = Database(cluster.env["DATABASE_URL"])
        self.url, self.key, self.processes = cluster.url, cluster.key, []
        self.http = httpx.Client(base_url=self.url, timeout=30,
                                 headers={"Authorization": f"Bearer {self.key}"})


def _need_root() -> None:
    if not netns.is_root():
        raise typer.BadParameter("network namespaces need root: run it with sudo")


def _load() -> str:
    """The 1-minute load average and the core count, as `uptime` shows the first."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


@app.command()
def up(
    workers: Annotated[int, typer.Option(help="Worker machines.")] = 2,
    threads: Annotated[int, typer.Option(help="Threads of each machine's tools worker.")] = 50,
) -> None:
    """Run a cluster until Ctrl-C (each worker machine serving every pool, so /ready is 200);
    print where its API is, its key and how to enter a machine."""
    _need_root()
    logs = Path(tempfile.mkdtemp(prefix="orch-netns-"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with netns.network(logs) as net:
        cluster = netns.start_cluster(net, SETTINGS)
        names = [f"w{i + 1}" for i in range(workers)]
        for name in names:
            cluster.add_worker(name, threads, slow=True, pools=tuple(POOLS))
        cluster.wait_api()
        cluster.wait_workers(names)
        for machine in net.machines.values():
            typer.echo(f"{machine.hostname:6} {machine.address:15} nsenter --target "
                       f"{machine.init} --net --uts --pid --mount")
        typer.echo(f"API      {cluster.url}\nAPI key  {cluster.key}\nlogs     {logs}\n"
                   f"debug.http target on every worker machine: "
                   f"http://127.0.0.1:{netns.SLOW_PORT}/?wait=1\nCtrl-C stops it all.")
        stop.wait()


@app.command()
def measure(
    machines: Annotated[int, typer.Option(help="Measure with 1 up to this many workers.")] = 3,
    threads: Annotated[int, typer.Option(help="Threads of each machine's tools worker.")] = 100,
    jobs: Annotated[int, typer.Option(help="debug.echo jobs per throughput measure.")] = 1000,
    concurrent: Annotated[int, typer.Option(help="debug.http jobs per concurrency measure.")] =
        300,
    wait: Annotated[float, typer.Option(help="Seconds each debug.http job waits.")] = 1.0,
) -> None:
    """Jobs/s and debug.http concurrency with 1, 2, ... worker machines (a Markdown table)."""
    _need_root()
    logs = Path(tempfile.mkdtemp(prefix="orch-netns-"))
    url = f"http://127.0.0.1:{netns.SLOW_PORT}/?wait={wait:g}"
    rows = ["| worker machines | threads | debug.echo jobs/s | "
            f"{concurrent} debug.http x {wait:g} s: seconds (of which submitting) | "
            "load (1 min) |",
            "|---|---|---|---|---|"]
    with netns.network(logs) as net:
        cluster = netns.start_cluster(net, SETTINGS)
        cluster.wait_api()
        client = ClusterClient(cluster)
        try:
            for count in range(1, machines + 1):
                cluster.add_worker(f"w{count}", threads, slow=True)
                cluster.wait_workers([f"w{count}"])
                client.throughput(50, clients=8)  # warm up the new machine
                rate = client.throughput(jobs, clients=16)
                took, submitting = client.concurrency(concurrent, url)
                rows.append(f"| {count} | {count * threads} | {rate:.0f} | {took:.2f} "
                            f"({submitting:.2f}) | {_load()} |")
                typer.echo(rows[-1], err=True)
        finally:
            client.close()
            client.db.dispose()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    typer.echo("\n".join(rows) + f"\n\n`uptime` at the end: {uptime}\n(logs in {logs})")


if __name__ == "__main__":
    app()
