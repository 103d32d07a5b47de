"""A step's ledger work alone, in one thread: the begin's read (`begin_step` asked without
writing, as a worker asks it) and the end's write (`take_start` + `finish_step`, the start
merged into the end), on a SQLite file of its own or a throwaway Postgres (`--postgres`, the
pgserver wheel); no broker, no other process. Also the CPU time this process spent on each
(the rest of the wall time waits on the store).

`.venv/bin/python bench/ledger.py [-n 2000] [--postgres]`; the first fifth warm up and are not
counted. Prints the mean of each, in ms.
"""

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.db import Database  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.store.ledger import begin_step, finish_step, take_start  # noqa: E402
from core.store.submission import submit_job  # noqa: E402
from core.store.tables import NewStep  # noqa: E402
from core.store.tenants import create_tenant_key  # noqa: E402
from core.vault import Vault, new_key  # noqa: E402
from tests import services  # noqa: E402


def jobs(db: Database, n: int) -> list[str]:
    """`n` jobs of two steps each, stored."""
    with db.write() as session:
        tenant, _ = create_tenant_key(session=session, vault=Vault([new_key()]),
                                      tenant_name="bench")
        for i in range(n):
            submit_job(session=session, job_id=f"job{i}", tenant_id=tenant.id,
                       intent="debug.echo", mode="intent", inputs={}, context={},
                       steps=[NewStep("debug.echo", "tools", {"text": str(i)})] * 2,
                       idempotency_key=None, callback_url=None, window=60)
    return [f"job{i}" for i in range(n)]


def step(db: Database, job_id: str) -> tuple[float, float, float, float]:
    """One step's begin and end: their seconds, then the CPU seconds of each."""
    cpu = time.thread_time()
    began = time.perf_counter()
    with db.read() as session:
        start = begin_step(session=session, job_id=job_id, index=0, runner="bench:1",
                           max_deliveries=5, claim=lambda attempts: attempts)
    read, read_cpu = time.perf_counter(), time.thread_time()
    assert start.unrecorded is not None
    with db.write() as session:
        take_start(session=session, start=start.unrecorded)
        done = finish_step(session=session, job_id=job_id, index=0, output={"ok": True},
                           rest=start.rest)
    assert done.send is not None and done.send.index == 1
    return (read - began, time.perf_counter() - read, read_cpu - cpu,
            time.thread_time() - read_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="Steps.")
    parser.add_argument("--postgres", action="store_true",
                        help="A throwaway Postgres from the pgserver wheel, not SQLite.")
    args = parser.parse_args()
    sqlite = f"sqlite:///{tempfile.mkdtemp(prefix='orch-ledger-')}/ledger.db"
    with services.postgres_server() if args.postgres else nullcontext(sqlite) as url:
        upgrade(url)
        db = Database(url)
        timings = [step(db, job_id) for job_id in jobs(db, args.n)][args.n // 5:]
        db.dispose()
    for name, n in (("begin (a read)", 0), ("end (the write, its start merged in)", 1)):
        wall, cpu = ([t[i] for t in timings] for i in (n, n + 2))
        print(f"{sum(wall) / len(wall) * 1000:6.3f} ms  {name}  "
              f"({sum(cpu) / len(cpu) * 1000:.3f} ms CPU)")


if __name__ == "__main__":
    main()
