"""What the API process holds while it runs, built in the lifespan."""

import threading
from dataclasses import dataclass, field
from functools import cached_property

import redis
from cachetools import TTLCache
from celery import Celery

from adapters.agents import AgentClient
from adapters.llm import LLM
from api.hub import EventHub
from api.ratelimit import RateLimiter
from core.db import Database
from core.settings import Settings
from core.store.keys import KeyInfo, key_info, touch_key
from core.store.rates import Rate, Rates, rates_for, tenant_limits
from core.vault import Vault
from tasks.engine.resources import Resources

KEY_CACHE_SIZE = 10_000  # keys remembered per process; the least recently used leave first


@dataclass(frozen=True)
class Authorized:
    """A live key and the rates its requests are limited to (both cached briefly)."""

    key: KeyInfo
    rates: Rates


@dataclass
class AppState:
    """The API process: its resources (the clients a worker has too), the Celery app that
    sends steps, the event hub, and the key cache."""

    resources: Resources
    celery: Celery
    hub: EventHub
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def db(self) -> Database:
        return self.resources.db

    @property
    def redis(self) -> redis.Redis:
        return self.resources.redis

    @property
    def llm(self) -> LLM:
        return self.resources.llm

    @property
    def vault(self) -> Vault:
        """Seals and opens the secrets the API stores and shows."""
        return self.resources.vault

    @property
    def agents(self) -> AgentClient:
        """The client that health-checks agents being registered (their URLs are guarded)."""
        return self.resources.agents

    def close(self) -> None:
        self.resources.close()

    @cached_property
    def _keys(self) -> "TTLCache[str, Authorized]":
        return TTLCache(KEY_CACHE_SIZE, self.settings.api.key_cache_seconds)

    @cached_property
    def limiter(self) -> RateLimiter:
        """The shared token buckets (its script is registered once per process)."""
        return RateLimiter(self.redis)

    def tenant_for_key(self, raw_key: str) -> str | None:
        """The tenant of a live API key, or None."""
        found = self.authorize(raw_key)
        return found.key.tenant_id if found else None

    def authorize(self, raw_key: str) -> Authorized | None:
        """The live key `raw_key` is and its rates, or None. Cached for API_KEY_CACHE_SECONDS
        (≤ 5 s), so a revoked key is refused everywhere within that; each lookup from the store
        also records the key's last use (at most once a minute)."""
        with self._lock:
            cached = self._keys.get(raw_key)
        if cached is not None:
            return cached
        with self.db.read() as session:
            info = key_info(session=session, raw_key=raw_key)
            if info is None:
                return None
            found = Authorized(info, rates_for(tenant_limits(
                session=session, tenant_id=info.tenant_id), self.default_rates))
        if info.stale:
            with self.db.write() as session:
                touch_key(session=session, key_id=info.key_id)
        with self._lock:
            self._keys[raw_key] = found
        return found

    @property
    def default_rates(self) -> Rates:
        """The RATE_LIMIT_* settings."""
        limits = self.settings.rate_limit
        return Rates(Rate(limits.key_rate, limits.key_burst),
                     Rate(limits.tenant_rate, limits.tenant_burst))
