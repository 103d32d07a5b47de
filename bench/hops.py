"""Where a single step's round trip goes: `debug.echo` with `wait=true`, cut at the job's own
timestamps (the job's `created_at`, its step's `started_at` and `finished_at`, the job's
`finished_at`), all taken on this machine's clock, between the client's send and its answer.

`.venv/bin/python bench/hops.py [-n 200] [--postgres]`; the first 30 jobs warm up and are
not counted. Prints the median of each hop.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.e2e import Orchestrator  # noqa: E402
from tests import services  # noqa: E402

WARMUP = 30
HOPS = (
    "client's POST -> the job stored (HTTP, auth, rate limit, validation, its transaction)",
    "-> its step started (commit, the first step's message, the worker taking it, the ledger's"
    " read, the start's lease)",
    "-> its step finished (the handler, the end's statements with the start's merged in)",
    "-> the answer received (commit, publish, the API woken, its read, the HTTP answer)",
)


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def hops(stack: Orchestrator, n: int) -> list[tuple[float, ...]]:
    """Each counted job's hops and total, in seconds."""
    rows = []
    for i in range(WARMUP + n):
        sent = time.time()
        job = stack.submit("debug.echo", {"i": i, "n": uuid.uuid4().hex}, wait=True)
        answered = time.time()
        if i < WARMUP:
            continue
        full = stack.http.get(f"/v1/jobs/{job['job_id']}").json()
        step = full["steps"][0]
        marks = [sent, _at(full["created_at"]), _at(step["started_at"]),
                 _at(step["finished_at"]), answered]
        rows.append((*(b - a for a, b in zip(marks, marks[1:], strict=False)),
                     answered - sent))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200, help="Jobs counted.")
    parser.add_argument("--postgres", action="store_true",
                        help="Job store: a throwaway Postgres from the pgserver wheel.")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="orch-hops-"))
    stack_args = argparse.Namespace(batch=0, api_workers=1, threads=500, tools_workers=1,
                                    profile="", timeline=False)
    with services.redis_server() as broker, (
            services.postgres_server() if args.postgres else
            nullcontext(f"sqlite:///{logs}/hops.db")) as database_url:
        stack = Orchestrator(broker.url, database_url, logs, stack_args)
        try:
            rows = hops(stack, args.n)
        finally:
            stack.close()
    for name, column in zip((*HOPS, "total"), zip(*rows, strict=True), strict=True):
        print(f"{statistics.median(column) * 1000:7.2f} ms  {name}")
    print(f"\n({args.n} jobs; {os.cpu_count()} cores; "
          f"{'Postgres' if args.postgres else 'SQLite'}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())})")


if __name__ == "__main__":
    main()
