"""What the API process holds while it runs, built in the lifespan."""

import time
from dataclasses import dataclass, field
from functools import cached_property

import redis
from celery import Celery

from adapters.agents import AgentClient
from adapters.llm import LLM
from adapters.netguard import parse_networks
from api.hub import EventHub
from core import store
from core.db import Database
from core.settings import Settings
from core.vault import Vault

KEY_CACHE_SECONDS = 30.0


@dataclass
class AppState:
    """The API's clients: job store, Redis, the Celery app, the event hub, the model, and the
    vault that seals and opens the secrets it stores."""

    settings: Settings
    db: Database
    redis: redis.Redis
    celery: Celery
    hub: EventHub
    llm: LLM
    vault: Vault
    _keys: dict[str, tuple[tuple[str, str], float]] = field(default_factory=dict)

    @cached_property
    def agents(self) -> AgentClient:
        """The client that health-checks agents being registered (their URLs are guarded)."""
        return AgentClient(parse_networks(self.settings.callback.allowed_networks))

    def close(self) -> None:
        if "agents" in self.__dict__:
            self.agents.http.close()
        self.llm.close()
        self.redis.close()
        self.db.dispose()

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
            owner = store.key_owner(session=session, raw_key=raw_key)
        if owner is not None:
            self._keys[raw_key] = (owner, now + KEY_CACHE_SECONDS)
        return owner

    def is_operator(self, tenant_id: str) -> bool:
        """Whether the tenant is an operator (read from the store: rare, never cached)."""
        with self.db.read() as session:
            return store.is_operator(session=session, tenant_id=tenant_id)
