"""Per-process resources of a worker: made after fork, closed on shutdown."""

from dataclasses import dataclass
from functools import cached_property

import redis

from adapters.breakers import Breakers
from core.db import Database
from core.settings import Settings, get_settings


@dataclass
class Runtime:
    """What a worker process needs to record steps: the store, Redis and settings."""

    settings: Settings
    db: Database
    redis: redis.Redis

    @cached_property
    def breakers(self) -> Breakers:
        """This process's circuit breakers, their state shared through Redis."""
        return Breakers(self.redis, self.settings.breaker)

    def close(self) -> None:
        self.db.dispose()
        self.redis.close()


_runtime: Runtime | None = None


def open_runtime() -> Runtime:
    """Create this process's runtime (called from `worker_process_init`)."""
    global _runtime
    settings = get_settings()
    _runtime = Runtime(settings=settings, db=Database(settings.database.url),
                       redis=redis.Redis.from_url(settings.broker.url))
    return _runtime


def runtime() -> Runtime:
    """This process's runtime, opened on first use if the init signal did not run."""
    return _runtime or open_runtime()


def close_runtime() -> None:
    global _runtime
    if _runtime is not None:
        _runtime.close()
        _runtime = None
