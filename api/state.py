"""What the API process holds while it runs, built in the lifespan."""

import time
from dataclasses import dataclass, field

import redis
from celery import Celery

from adapters.agents import AgentClient
from adapters.llm import LLM
from api.hub import EventHub
from core.db import Database
from core.settings import Settings
from core.store.tenants import is_operator, key_owner
from core.vault import Vault
from tasks.engine.resources import Resources

KEY_CACHE_SECONDS = 30.0


@dataclass
class AppState:
    """The API process: its resources (the clients a worker has too), the Celery app that
    sends steps, the event hub, and the key cache."""

    resources: Resources
    celery: Celery
    hub: EventHub
    _keys: dict[str, tuple[tuple[str, str], float]] = field(default_factory=dict)

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

    def tenant_for_key(self, raw_key: str) -> str | None:
        """The tenant of an API key (see `key_owner`)."""
        owner = self.key_owner(raw_key)
        return owner[0] if owner else None

    def key_owner(self, raw_key: str) -> tuple[str, str] | None:
        """The tenant and key id of an API key, cached briefly so each request is not a query."""
        cached = self._keys.get(raw_key)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        with self.db.read() as session:
            owner = key_owner(session=session, raw_key=raw_key)
        if owner is not None:
            self._keys[raw_key] = (owner, now + KEY_CACHE_SECONDS)
        return owner

    def is_operator(self, tenant_id: str) -> bool:
        """Whether the tenant is an operator (read from the store: rare, never cached)."""
        with self.db.read() as session:
            return is_operator(session=session, tenant_id=tenant_id)
