"""The integration stack: a real broker, SQLite or Postgres, worker processes and the API."""

import json
import os
import re
import shutil
import sys
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

from core.db import Database
from core.migrate import upgrade
from core.models import Scope
from core.store.tenants import create_tenant_key
from core.vault import Vault, new_key
from tests import n8n as n8n_service
from tests import services
from tests.conftest import keep
from tests.integration import sshd as sshd_service
from tests.n8n import N8n

OTHER_POOLS = ["llm", "flow", "callbacks"]
METRICS_TOKEN = "metrics-token-for-tests"
SECRET_KEY = new_key()  # seals the stacks' secrets at rest (ORCHESTRATOR_SECRET_KEY)
VISIBILITY_TIMEOUT = 60
LOST_AFTER = 4
FLOWS_FILE = Path(__file__).parent / "flows.json"
SSH_TENANT = "ten_ssh_granted00"  # the tenant granted the test hosts (see test_ssh.py)
SSH_BREAKER_FAIL_MAX = 2


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

    def new_key(self, operator: bool = False, tenant: str | None = None,
                scopes: set[Scope] | None = None) -> str:
        """A key of a new tenant (or of `tenant`, by name), with every tenant scope unless
        `scopes` names some."""
        with self.db.write() as session:
            _, raw = create_tenant_key(session=session, vault=Vault([SECRET_KEY]),
                                       tenant_name=tenant or f"t-{uuid.uuid4().hex[:8]}",
                                       operator=operator, scopes=scopes)
        return raw

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {key or self.new_key()}"})

    def metrics(self) -> str:
        """What Prometheus scrapes, with the metrics token."""
        response = httpx.get(f"{self.url}/metrics",
                             headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        response.raise_for_status()
        return response.text

    def metrics_with(self, sample: str, timeout: float = 10) -> str:
        """The metrics once `sample` (a name with its labels) counts at least one (each worker
        adds its tally of figures at most a second after it counted them)."""
        deadline = time.monotonic() + timeout
        while True:
            metrics = self.metrics()
            found = re.search(rf"^{re.escape(sample)} (\S+)$", metrics, re.MULTILINE)
            if found and float(found.group(1)) >= 1:
                return metrics
            assert time.monotonic() < deadline, f"{sample} not counted in the metrics"
            time.sleep(0.2)

    def start_worker(self, name: str, pools: list[str], concurrency: int = 50,
                     prefetch: int | None = None) -> None:
        self.workers[name] = services.start_worker(self.env, pools, self.logs / f"{name}.log",
                                                   concurrency, prefetch)

    def start_sweeper(self) -> None:
        self.sweeper = services.Process([str(services.BIN / "orchestrator"), "sweeper"],
                                        self.env, self.logs / "sweeper.log")

    def wait_ready(self, timeout: float = 60) -> None:
        services.wait_http(f"{self.url}/ready", timeout=timeout)

    def stop(self) -> None:
        """Every process asked to stop at once, then each waited for (they stop side by side)."""
        processes = [p for p in [*self.workers.values(), self.api, self.sweeper] if p is not None]
        for process in processes:
            process.terminate()
        for process in processes:
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


@dataclass(frozen=True)
class FlowPorts:
    """Where the workflow engines listen: known before the stack starts, served when needed."""

    n8n: int
    activepieces: int


@pytest.fixture(scope="session")
def flow_ports() -> FlowPorts:
    return FlowPorts(services.free_port(), services.free_port())


@pytest.fixture(scope="session")
def n8n(flow_ports: FlowPorts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[N8n]:
    """A real n8n with the test workflows active (installed once into the cache)."""
    n8n_service.install()
    server = N8n(flow_ports.n8n, tmp_path_factory.mktemp("n8n"))
    try:
        server.import_workflows()
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def mcp_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The MCP servers the stack's tools workers discover: the real `mcp-server-time` over
    stdio, a streamable-HTTP server built with the SDK, and one no tenant of the tests may use.
    """
    folder = tmp_path_factory.mktemp("mcp")
    port = services.free_port()
    server = services.Process([sys.executable, "-m", "tests.integration.mcp_http_server",
                               str(port)], dict(os.environ), folder / "mcp-http.log")
    time_server = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
    listed = folder / "mcp-servers.json"
    listed.write_text(json.dumps([
        {"name": "time", "command": time_server},
        {"name": "local", "url": f"http://127.0.0.1:{port}/mcp", "timeout": 20},
        {"name": "secret", "command": time_server, "tenants": ["ten_nobody"]}]))
    try:
        services.wait_http(f"http://127.0.0.1:{port}/mcp", expect=400)
        yield listed
    finally:
        server.stop()


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
            "ORCHESTRATOR_SYNC_TIMEOUT": "8", "API_METRICS_TOKEN": METRICS_TOKEN,
            # Every request takes its tokens (the limiter runs) but the suite's pace passes;
            # test_keys.py runs a stack with the limits it checks.
            "RATE_LIMIT_KEY_RATE": "500", "RATE_LIMIT_KEY_BURST": "1000",
            "RATE_LIMIT_TENANT_RATE": "1000", "RATE_LIMIT_TENANT_BURST": "2000",
            # The suite submits debug intents, hidden by default outside development.
            "ORCHESTRATOR_EXPOSED_INTENTS": '["*"]',
            "ORCHESTRATOR_SECRET_KEY": SECRET_KEY,
            "PATH": f"{services.BIN}:{os.environ['PATH']}"}


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


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def own_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Database]:
    """A migrated job store of the test module's own, on each backend in turn: for tests of
    the store itself on both."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    logs: Path = tmp_path_factory.mktemp(name)
    url = own_database(request, request.param, f"{name}_{uuid.uuid4().hex[:8]}", logs)
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@contextmanager
def running_stack(request: pytest.FixtureRequest, backend: str, db_index: int,
                  extra_env: dict[str, str], name: str = "orchestrator",
                  split_workers: bool = True, broker_url: str | None = None,
                  concurrency: int = 20, prefetch: int | None = None) -> Iterator[Stack]:
    """A whole stack on its own Redis database and job store, stopped on exit; its logs are
    kept only when a test failed while it ran. Without `split_workers` one worker serves every
    pool, with `concurrency` threads each holding up to `prefetch` messages."""
    logs = Path(tempfile.mkdtemp(prefix=f"orch-{name}-{backend}-"))
    database_url = own_database(request, backend, name, logs)
    upgrade(database_url)
    port = services.free_port()
    broker_url = broker_url or request.getfixturevalue("broker_url")
    env = {**_env(broker_url, database_url, port, db_index),
           **extra_env}
    running = Stack(url=f"http://127.0.0.1:{port}", env=env, db=Database(database_url),
                    logs=logs)
    failed_before = request.session.testsfailed
    try:
        if split_workers:
            running.start_worker("tools", ["tools"])
            running.start_worker("memory", ["memory"], concurrency=2)
            running.start_worker("others", OTHER_POOLS, concurrency=20)
        else:
            running.start_worker("all", ["llm", "tools", "flow", "callbacks", "memory"],
                                 concurrency=concurrency, prefetch=prefetch)
        running.api = services.start_api(env, logs / "api.log")
        running.start_sweeper()
        running.wait_ready()
        yield running
    finally:
        running.stop()
        _keep_logs_if_failed(logs, request.session.testsfailed > failed_before)


@dataclass(frozen=True)
class SshServers:
    """The real sshd every stack reaches (`box`), and one a test stops (`down`)."""

    box: sshd_service.Sshd
    down: sshd_service.Sshd
    hosts: str


def _ssh_hosts(box: sshd_service.Sshd, down: sshd_service.Sshd) -> str:
    """SSH_HOSTS: `box` under four names (right key, unknown key, changed key, and one every
    tenant may use) and `down`; all but `shared` granted to SSH_TENANT only."""
    other = sshd_service.keygen(box.root / "other_host_key")
    return json.dumps([
        box.host("box", [SSH_TENANT]),
        box.host("unknown-key", [SSH_TENANT], box.known_hosts("empty_known_hosts", "")),
        box.host("changed-key", [SSH_TENANT], box.known_hosts("changed_known_hosts", other)),
        box.host("shared", ["*"]),
        down.host("down", [SSH_TENANT])])


@pytest.fixture(scope="session")
def ssh_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServers]:
    box = sshd_service.start(tmp_path_factory.mktemp("sshd-box"))
    down = sshd_service.start(tmp_path_factory.mktemp("sshd-down"))
    try:
        yield SshServers(box, down, _ssh_hosts(box, down))
    finally:
        for server in (box, down):
            server.stop()


def _shared_stack(request: pytest.FixtureRequest, backend: str, flow_ports: FlowPorts,
                  mcp_servers: Path, ssh_servers: SshServers) -> Iterator[Stack]:
    db_index = 1 if backend == "sqlite" else 2
    extra = {"N8N_WEBHOOK_BASE": f"http://127.0.0.1:{flow_ports.n8n}/webhook",
             "ACTIVEPIECES_BASE": f"http://127.0.0.1:{flow_ports.activepieces}/api/v1/webhooks",
             "FLOWS_FILE": str(FLOWS_FILE),
             "BREAKER_OVERRIDES": json.dumps({"flow": 2, "ssh": SSH_BREAKER_FAIL_MAX}),
             "ORCHESTRATOR_FLOW_TIMEOUT": "10", "MCP_SERVERS_FILE": str(mcp_servers),
             "SSH_HOSTS": ssh_servers.hosts}
    with running_stack(request, backend, db_index, extra) as running:
        yield running


@pytest.fixture(scope="session")
def sqlite_stack(request: pytest.FixtureRequest, flow_ports: FlowPorts, mcp_servers: Path,
                 ssh_servers: SshServers) -> Iterator[Stack]:
    yield from _shared_stack(request, "sqlite", flow_ports, mcp_servers, ssh_servers)


@pytest.fixture(scope="session")
def postgres_stack(request: pytest.FixtureRequest, flow_ports: FlowPorts, mcp_servers: Path,
                   ssh_servers: SshServers) -> Iterator[Stack]:
    yield from _shared_stack(request, "postgres", flow_ports, mcp_servers, ssh_servers)


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """The whole stack on one job-store backend: API, a tools worker, a prefork memory worker,
    a worker for the rest, the sweeper; flows and MCP servers configured. One of each backend
    serves the run (a process's share of it, under pytest-xdist), started when first asked
    for and kept: tests of a file run on one process, and both backends stay up between them."""
    running: Stack = request.getfixturevalue(f"{request.param}_stack")
    return running


def _keep_logs_if_failed(logs: Path, failed: bool) -> None:
    """A stack's logs (and SQLite store) are kept for a failed test only."""
    if failed:
        keep(logs)
    else:
        shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    """An API client of a fresh tenant, so tests never see each other's jobs."""
    with stack.client() as http:
        yield http
