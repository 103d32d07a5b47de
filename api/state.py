"""What the API process holds while it runs, built in the lifespan."""

import time
from dataclasses import dataclass, field

import redis
from celery import Celery

from api.hub import EventHub
from core import store
from core.db import Database
from core.settings import Settings

KEY_CACHE_SECONDS = 30.0


@dataclass
class AppState:
    """The API's clients: job store, Redis, the Celery app, the event hub."""

    settings: Settings
    db: Database
    redis: redis.Redis
    celery: Celery
    hub: EventHub
    _keys: dict[str, tuple[tuple[str, str], float]] = field(default_factory=dict)

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
