"""The integration stack: a real broker, SQLite or Postgres, worker processes and the API."""

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from core import store
from core.db import Database
from core.migrate import upgrade
from tests import services

OTHER_POOLS = ["llm", "flow", "callbacks"]
VISIBILITY_TIMEOUT = 60
LOST_AFTER = 4


@dataclass
class Stack:
    """A running orchestrator: its API URL, environment, store and worker processes."""

    url: str
    env: dict[str, str]
    db: Database
    logs: Path
    workers: dict[str, services.Process] = field(default_factory=dict)
    api: services.Process | None = None
    sweeper: services.Process | None = None

    def new_key(self, operator: bool = False) -> str:
        with self.db.write() as session:
            _, raw = store.create_tenant_key(session=session,
                                             tenant_name=f"t-{uuid.uuid4().hex[:8]}",
                                             operator=operator)
        return raw

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {key or self.new_key()}"})

    def start_worker(self, name: str, pools: list[str], concurrency: int = 50) -> None:
        self.workers[name] = services.start_worker(self.env, pools, self.logs / f"{name}.log",
                                                   concurrency)

    def start_sweeper(self) -> None:
        self.sweeper = services.Process([str(services.BIN / "orchestrator"), "sweeper"],
                                        self.env, self.logs / "sweeper.log")

    def wait_ready(self, timeout: float = 60) -> None:
        services.wait_http(f"{self.url}/ready", timeout=timeout)

    def stop(self) -> None:
        for process in [*self.workers.values(), self.api, self.sweeper]:
            if process is not None:
                process.stop()
        self.db.dispose()


def wait_job(client: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """Poll a job until it is terminal."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def broker() -> Iterator[services.BrokerServer]:
    with services.redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def broker_url(broker: services.BrokerServer) -> str:
    return broker.url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with services.postgres_server() as url:
        yield url


def _env(broker_url: str, database_url: str, port: int, db_index: int) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": broker_url.rsplit("/", 1)[0] + f"/{db_index}",
            "DATABASE_URL": database_url, "API_PORT": str(port),
            "WORKER_HEARTBEAT_SECONDS": "1",
            "BROKER_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "BROKER_RESTORE_INTERVAL": "1",
            "CALLBACK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
            "CALLBACK_SCHEDULE": "[0.3, 0.3, 0.3]",
            "CALLBACK_SWEEP_SECONDS": "0.3", "CALLBACK_TIMEOUT": "3",
            "BREAKER_FAIL_MAX": "1000", "ORCHESTRATOR_LOST_AFTER": "2",
            "WORKER_LOST_AFTER": str(LOST_AFTER), "POOL_SOFT_TIME_LIMIT": "40",
            "POOL_TIME_LIMIT": "50", "ORCHESTRATOR_DEBUG_CRASH": "true",
            "API_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "BROKER_RESTORE_LOCK_SECONDS": "5",
            "ORCHESTRATOR_UPSTREAM_RETRIES": "2",
            "ORCHESTRATOR_SYNC_TIMEOUT": "8", "PATH": f"{services.BIN}:{os.environ['PATH']}"}


def own_database(request: pytest.FixtureRequest, backend: str, name: str, logs: Path) -> str:
    """A job store of the stack's own: a SQLite file, or a new database in the test Postgres."""
    if backend == "sqlite":
        return f"sqlite:///{logs}/orchestrator.db"
    base: str = request.getfixturevalue("postgres_url")
    if name == "orchestrator":
        return base
    with psycopg.connect(base.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def running_stack(request: pytest.FixtureRequest, backend: str, db_index: int,
                  extra_env: dict[str, str], name: str = "orchestrator",
                  split_workers: bool = True) -> Iterator[Stack]:
    """A whole stack on its own Redis database and job store, stopped on exit."""
    logs = Path(tempfile.mkdtemp(prefix=f"orch-{name}-{backend}-"))
    database_url = own_database(request, backend, name, logs)
    upgrade(database_url)
    port = services.free_port()
    env = {**_env(request.getfixturevalue("broker_url"), database_url, port, db_index),
           **extra_env}
    running = Stack(url=f"http://127.0.0.1:{port}", env=env, db=Database(database_url),
                    logs=logs)
    try:
        if split_workers:
            running.start_worker("tools", ["tools"])
            running.start_worker("memory", ["memory"], concurrency=2)
            running.start_worker("others", OTHER_POOLS, concurrency=20)
        else:
            running.start_worker("all", ["llm", "tools", "flow", "callbacks", "memory"],
                                 concurrency=20)
        running.api = services.start_api(env, logs / "api.log")
        running.start_sweeper()
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, broker_url: str) -> Iterator[Stack]:
    """The whole stack on one job-store backend: API, a tools worker, a worker for the rest."""
    db_index = 1 if request.param == "sqlite" else 2
    with running_stack(request, request.param, db_index, {}) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    """An API client of a fresh tenant, so tests never see each other's jobs."""
    with stack.client() as http:
        yield http
