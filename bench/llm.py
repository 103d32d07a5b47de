"""Planning overhead: the `llm.plan` step's time minus the time spent waiting on the model.

Starts a private Valkey, the scripted OpenAI-compatible server of the tests (instant answers,
one `debug.echo` step planned), an API, an `llm` + `tools` worker and SQLite, then sends `-n`
prompts one at a time. For each it reads the plan step's duration from the ledger
(`finished_at - started_at`) and the model seconds the step recorded in its `usage`; the
difference is what the orchestrator adds to planning (prompt building, registry checks, the
ledger writes, the plan event). `--llama` plans against the real llama.cpp server instead.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.db import Database  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.store.tenants import create_tenant_key  # noqa: E402
from core.vault import Vault, new_key  # noqa: E402
from tests import services  # noqa: E402
from tests.integration.llm_server import plan, scripted_llm  # noqa: E402

ECHO = {"intent": "debug.echo", "inputs": {"results": [1, 2]}, "why": "bench"}


SECRET_KEY = new_key()  # the stack's ORCHESTRATOR_SECRET_KEY


def seconds(text: str | None) -> float:
    from datetime import datetime
    return datetime.fromisoformat(str(text)).timestamp()


def sample(http: httpx.Client, n: int) -> tuple[float, float, float]:
    """One prompt: (plan step seconds, model seconds in it, POST-to-answer seconds)."""
    started = time.perf_counter()
    job = http.post("/v1/jobs", json={"prompt": f"bench {n}", "wait": True}).json()
    total = time.perf_counter() - started
    if job.get("status") != "succeeded":
        raise RuntimeError(f"prompt {n} did not succeed: {job}")
    step: dict[str, Any] = job["steps"][0]
    duration = seconds(step["finished_at"]) - seconds(step["started_at"])
    return duration, step["output"]["usage"]["model_seconds"], total


def run(args: argparse.Namespace, base_url: str, model: str) -> list[tuple[float, float, float]]:
    logs = Path(tempfile.mkdtemp(prefix="orch-bench-llm-"))
    database_url = f"sqlite:///{logs}/orchestrator.db"
    upgrade(database_url)
    db = Database(database_url)
    with db.write() as session:
        _, key = create_tenant_key(session=session, vault=Vault([SECRET_KEY]),
                                   tenant_name="bench")
    with services.redis_server() as broker:
        port = services.free_port()
        env = {**os.environ, "REDIS_URL": broker.url, "DATABASE_URL": database_url,
               "ORCHESTRATOR_SECRET_KEY": SECRET_KEY,
               "ORCHESTRATOR_EXPOSED_INTENTS": '["*"]',  # the debug intent it plans
               "API_PORT": str(port), "WORKER_HEARTBEAT_SECONDS": "1",
               "LLM_BASE_URL": base_url, "LLM_API_KEY": "bench", "LLM_MODEL": model,
               "LLM_PLAN_INTENTS": '["debug.echo"]', "LLM_MAX_PLAN_STEPS": "1",
               "LLM_MAX_TOKENS": "64", "ORCHESTRATOR_SYNC_TIMEOUT": "120"}
        processes = [services.start_worker(env, ["llm", "tools", "memory", "flow", "callbacks"],
                                           logs / "worker.log", 8),
                     services.start_api(env, logs / "api.log")]
        try:
            services.wait_http(f"http://127.0.0.1:{port}/ready", timeout=60)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                              headers={"Authorization": f"Bearer {key}"}) as http:
                for i in range(args.warmup):
                    sample(http, -1 - i)
                return [sample(http, i) for i in range(args.n)]
        finally:
            for process in processes:
                process.stop()
            db.dispose()


def report(samples: list[tuple[float, float, float]], label: str) -> str:
    def ms(values: list[float]) -> str:
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
        return f"{statistics.median(ordered) * 1000:8.2f} {p90 * 1000:8.2f}"

    plans = [s[0] for s in samples]
    models = [s[1] for s in samples]
    overhead = [s[0] - s[1] for s in samples]
    totals = [s[2] for s in samples]
    return "\n".join([
        f"{label}: {len(samples)} prompts, one at a time (p50 / p90 ms)",
        f"  plan step            {ms(plans)}",
        f"  model time in it     {ms(models)}",
        f"  planning overhead    {ms(overhead)}",
        f"  prompt POST→answer   {ms(totals)}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=50, help="Prompts measured.")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--llama", action="store_true", help="Plan with real llama.cpp.")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.llama:
            from tests.integration.llama import MODEL, llama_server
            url, model, label = stack.enter_context(llama_server()), MODEL, "llama.cpp"
        else:
            server, script = stack.enter_context(scripted_llm())
            script.set(plans=[plan(ECHO)])
            url, model, label = f"{server.url}/v1", "scripted", "scripted server"
        print(report(run(args, url, model), label))


if __name__ == "__main__":
    main()
