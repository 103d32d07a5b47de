"""Per-process resources of a worker: made after fork (or on first use), closed on shutdown."""

import threading
from dataclasses import dataclass, field
from functools import cached_property

import redis

from adapters import netguard
from adapters.agents import AgentClient
from adapters.breakers import Breakers
from adapters.flow import FlowClient
from adapters.http import HttpClient
from adapters.llm import LLM
from adapters.ssh import SshClient
from core.db import Database
from core.settings import Settings, get_settings
from workers import heartbeat

REDIS_POOL_TIMEOUT = 20
REDIS_MAX_CONNECTIONS = 100


@dataclass
class Runtime:
    """What a worker process needs to run steps: store, Redis, settings, its runner id."""

    settings: Settings
    db: Database
    redis: redis.Redis
    runner: str
    executing: set[tuple[str, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    holdings: heartbeat.Holdings | None = None
    _beat: threading.Event | None = None

    @cached_property
    def breakers(self) -> Breakers:
        """This process's circuit breakers, their state shared through Redis."""
        return Breakers(self.redis, self.settings.breaker)

    @cached_property
    def flows(self) -> FlowClient:
        """This process's client of the workflow engines."""
        return FlowClient(self.settings.flow, self.settings.retry, self.breakers)

    @cached_property
    def agents(self) -> AgentClient:
        """This process's client of external agents (their URLs pass the SSRF guard)."""
        return AgentClient(netguard.parse_networks(self.settings.callback.allowed_networks))

    @cached_property
    def llm(self) -> LLM:
        """This process's client of the configured model (one connection pool for all threads)."""
        return LLM(self.settings.llm, self.breakers, self.settings.retry)

    @cached_property
    def ssh(self) -> SshClient:
        """This process's SSH connections to the configured hosts."""
        return SshClient(self.settings.ssh, self.settings.retry, self.breakers)

    @cached_property
    def http(self) -> HttpClient:
        """This process's client of tenant-supplied URLs (`http.request`, HTTP tools)."""
        return HttpClient(self.settings.http, self.settings.callback.allowed_networks,
                          self.settings.retry, self.breakers)

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
        if self._beat is not None:
            self._beat.set()
        for client in ("flows", "agents"):
            if client in self.__dict__:
                self.__dict__[client].http.close()
        if "llm" in self.__dict__:
            self.llm.close()
        if "ssh" in self.__dict__:
            self.ssh.close()
        self.db.dispose()
        self.redis.close()


_runtime: Runtime | None = None
_opening = threading.Lock()


def open_runtime(runner: bool = True) -> Runtime:
    """Create this process's runtime (after fork, or on the first step of a threads pool).

    A process that runs steps (`runner`) stamps its heartbeat so its steps can be recovered.
    """
    global _runtime
    settings = get_settings()
    pool = redis.BlockingConnectionPool.from_url(
        settings.broker.url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_POOL_TIMEOUT)
    _runtime = Runtime(settings=settings,
                       db=Database(settings.database.url, settings.database.pool_size,
                                   settings.database.max_overflow),
                       redis=redis.Redis(connection_pool=pool), runner=heartbeat.runner_id())
    if runner:
        _runtime.start_heartbeat()
    return _runtime


def runtime() -> Runtime:
    """This process's runtime, opened once on first use."""
    if _runtime is not None:
        return _runtime
    with _opening:
        return _runtime or open_runtime()


def close_runtime() -> None:
    global _runtime
    if _runtime is not None:
        _runtime.close()
        _runtime = None
