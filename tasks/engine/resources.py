"""Each process's resources: one object that owns every client (store, Redis, breakers and each
adapter), built after fork (or on first use), closed once on shutdown. Handlers get it as
`StepContext.resources` (arq's `ctx`), so a handler is testable with a fake."""

import threading
from dataclasses import dataclass, field
from functools import cached_property

import redis

from adapters import netguard
from adapters.agents import AgentClient
from adapters.breakers import Breakers
from adapters.callbacks import Sender
from adapters.embeddings import build_embedder
from adapters.flow import FlowClient
from adapters.http import HttpClient
from adapters.llm import LLM
from adapters.mcp import McpClient
from adapters.ssh import SshClient
from adapters.upstream import Upstream
from adapters.vectors import build_index
from core.commits import Commits
from core.db import Database
from core.memory.search import Memory
from core.settings import Settings, get_settings
from core.vault import Vault
from tasks.engine import heartbeat
from tasks.engine.registry import REGISTRY
from tasks.engine.starts import Starts

REDIS_POOL_TIMEOUT = 20
REDIS_MAX_CONNECTIONS = 100


@dataclass
class Resources:
    """What a process needs to run steps: settings, store, Redis, its runner id, and each
    adapter, built on first use."""

    settings: Settings
    db: Database
    redis: redis.Redis
    runner: str
    vault: Vault
    executing: set[tuple[str, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    holdings: heartbeat.Holdings | None = None
    _beat: threading.Event | None = None

    @cached_property
    def commits(self) -> Commits:
        """This process's group commits of its steps' writes to the store."""
        return Commits(self.db)

    @cached_property
    def breakers(self) -> Breakers:
        """This process's circuit breakers, their state shared through Redis."""
        return Breakers(self.redis, self.settings.breaker)

    @cached_property
    def allowed_networks(self) -> list[netguard.Network]:
        """CALLBACK_ALLOWED_NETWORKS, parsed once: the private networks tenant URLs may reach."""
        return netguard.parse_networks(self.settings.callback.allowed_networks)

    @cached_property
    def guarded_clients(self) -> netguard.Clients:
        """This process's kept-alive clients of tenant-supplied hosts (callbacks, HTTP calls),
        one per host name; every request is still checked by the guard."""
        return netguard.Clients()

    @cached_property
    def flows(self) -> FlowClient:
        """This process's client of the workflow engines."""
        return FlowClient(self.settings.flow, self.settings.retry, self.breakers)

    @cached_property
    def agents(self) -> AgentClient:
        """This process's client of external agents (their URLs pass the SSRF guard)."""
        return AgentClient(self.allowed_networks, self.breakers, self.settings.retry)

    @cached_property
    def callbacks(self) -> Sender:
        """This process's sender of signed callbacks (tenants' URLs, through the guard)."""
        return Sender(self.settings.callback, self.allowed_networks, self.breakers,
                      self.guarded_clients)

    @cached_property
    def mcp(self) -> McpClient:
        """This process's client of the configured MCP servers, a breaker per server."""
        return McpClient(self.breakers)

    @cached_property
    def llm(self) -> LLM:
        """This process's client of the configured model (one connection pool for all threads)."""
        return LLM(self.settings.llm, self.breakers, self.settings.retry)

    @cached_property
    def ssh(self) -> SshClient:
        """This process's SSH connections to the configured hosts."""
        return SshClient(self.settings.ssh, self.settings.retry, self.breakers)

    @cached_property
    def memory(self) -> Memory:
        """This process's embedder and vector index over the store (a memory worker's)."""
        settings = self.settings
        embedder = build_embedder(settings.embeddings, self.breakers, settings.retry)
        index = build_index(self.db.engine.dialect.name, settings.memory.cache_mb * 2**20)
        return Memory(self.db, embedder, index, settings.embeddings.batch_size,
                      settings.memory.candidates, settings.memory.rrf_k)

    @cached_property
    def http(self) -> HttpClient:
        """This process's client of tenant-supplied URLs (`http.request`, HTTP tools)."""
        return HttpClient(self.settings.http, self.allowed_networks,
                          self.settings.retry, self.breakers, self.guarded_clients)

    @cached_property
    def starts(self) -> Starts:
        """This process's step starts not written yet, and their leases (kept as long as a
        dead runner is remembered, so its unwritten attempt counts at the next delivery)."""
        return Starts(self.db, self.redis, self.runner,
                      lease_seconds=self.settings.worker.lost_after * heartbeat.KEEP_FACTOR)

    def start_heartbeat(self) -> None:
        """Stamp this process as a live runner until it closes."""
        worker = self.settings.worker
        self._beat = heartbeat.start_runner(self.redis, self.runner, worker.heartbeat_seconds,
                                            worker.lost_after)

    def is_live(self, runner: str, step: tuple[str, int]) -> bool:
        """Whether `runner` is running `step` now: this process knows; others' heartbeats tell."""
        if runner == self.runner:
            with self.lock:
                return step in self.executing
        return heartbeat.runner_alive(self.redis, runner, self.settings.worker.lost_after)

    def close(self) -> None:
        """Stop the heartbeat and close every upstream built so far, the store and Redis."""
        if self._beat is not None:
            self._beat.set()
        built = list(self.__dict__.values())
        for upstream in [u for u in built if isinstance(u, Upstream)]:
            upstream.close()
        if "memory" in self.__dict__:
            self.memory.embedder.close()
        if "guarded_clients" in self.__dict__:
            self.guarded_clients.close()
        if "starts" in self.__dict__:
            self.starts.close()
        self.db.dispose()
        self.redis.close()


_resources: Resources | None = None
_opening = threading.Lock()


def build_resources(settings: Settings) -> Resources:
    """Resources under `settings`, with nothing connected yet (the API's, a test's); without
    a secret key the process does not start."""
    vault = Vault(settings.orchestrator.secret_key)
    pool = redis.BlockingConnectionPool.from_url(
        settings.broker.url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_POOL_TIMEOUT)
    return Resources(settings=settings,
                     db=Database(settings.database.url, settings.database.pool_size,
                                 settings.database.max_overflow),
                     redis=redis.Redis(connection_pool=pool), runner=heartbeat.runner_id(),
                     vault=vault)


def open_resources(settings: Settings | None = None, runner: bool = True) -> Resources:
    """Create this process's resources (after fork, or on the first step of a threads pool)
    and bind the registry's providers to them.

    A process that runs steps (`runner`) stamps its heartbeat so its steps can be recovered.
    """
    global _resources
    _resources = build_resources(settings or get_settings())
    REGISTRY.bind(_resources)
    if runner:
        _resources.start_heartbeat()
    return _resources


def resources() -> Resources:
    """This process's resources, opened once on first use."""
    if _resources is not None:
        return _resources
    with _opening:
        return _resources or open_resources()


def close_resources() -> None:
    global _resources
    if _resources is not None:
        _resources.close()
        _resources = None
