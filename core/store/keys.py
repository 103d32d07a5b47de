"""API keys as objects: created with a name and scopes, listed, revoked, rotated, looked up.

Only a key's SHA-256 is stored; the raw key is returned once, when it is made.
"""

import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound
from core.models import ApiKey, Scope, Tenant, utcnow
from core.store.tables import sha256

# `last_used_at` is written at most this often per key, so a busy key costs no writes.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class KeyInfo:
    """A live key as an API process needs it: whose it is and what it may do."""

    tenant_id: str
    key_id: str
    scopes: frozenset[Scope]
    expires_at: datetime | None
    last_used_at: datetime | None = None

    @property
    def stale(self) -> bool:
        """Whether its last use is older than TOUCH_EVERY (then `touch_key` records it)."""
        return self.last_used_at is None or self.last_used_at < utcnow() - TOUCH_EVERY


def hash_key(raw_key: str) -> str:
    return sha256(raw_key)


def scope_text(scopes: Iterable[Scope]) -> str:
    """Scopes as stored: space-separated, in the enum's order."""
    chosen = set(scopes)
    return " ".join(s.value for s in Scope if s in chosen)


def scopes_of(key: ApiKey) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in key.scopes.split())


def add_key(*, session: Session, tenant_id: str, scopes: Iterable[Scope], name: str = "",
            expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key of the tenant; returns its row and the raw key (shown once)."""
    raw_key = f"ork_{secrets.token_urlsafe(32)}"
    key = ApiKey(id=f"key_{uuid.uuid4().hex[:16]}", tenant_id=tenant_id, name=name,
                 key_hash=hash_key(raw_key), scopes=scope_text(scopes), expires_at=expires_at)
    session.add(key)
    session.flush()
    return key, raw_key


def key_info(*, session: Session, raw_key: str) -> KeyInfo | None:
    """The live (not revoked, not expired) key `raw_key` is, or None."""
    key = session.exec(select(ApiKey).where(
        ApiKey.key_hash == hash_key(raw_key), col(ApiKey.revoked_at).is_(None),
        or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > utcnow()))).first()
    if key is None:
        return None
    return KeyInfo(key.tenant_id, key.id, scopes_of(key), key.expires_at, key.last_used_at)


def touch_key(*, session: Session, key_id: str) -> None:
    """Record that the key was used, unless that was recorded within TOUCH_EVERY."""
    now = utcnow()
    table = ApiKey.__table__  # type: ignore[attr-defined]
    session.execute(update(table).where(
        table.c.id == key_id,
        or_(table.c.last_used_at.is_(None), table.c.last_used_at < now - TOUCH_EVERY))
        .values(last_used_at=now))


def list_keys(*, session: Session, tenant_id: str) -> list[ApiKey]:
    """The tenant's keys, revoked ones included, oldest first."""
    return list(session.exec(select(ApiKey).where(ApiKey.tenant_id == tenant_id)
                             .order_by(col(ApiKey.created_at), col(ApiKey.id))))


def find_key(*, session: Session, key_id: str, tenant_id: str | None = None) -> ApiKey:
    """The key `key_id` (of `tenant_id`, when given); NotFound otherwise."""
    key = session.get(ApiKey, key_id)
    if key is None or (tenant_id is not None and key.tenant_id != tenant_id):
        raise NotFound(f"API key {key_id} not found")
    return key


def revoke_key(*, session: Session, key_id: str, tenant_id: str | None = None) -> ApiKey:
    """Revoke a key (again is no change); every API process refuses it within its cache TTL."""
    key = find_key(session=session, key_id=key_id, tenant_id=tenant_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
    return key


def rotate_key(*, session: Session, key_id: str,
               tenant_id: str | None = None) -> tuple[ApiKey, str]:
    """Revoke a live key and make its successor: same tenant, name, scopes and expiry."""
    old = find_key(session=session, key_id=key_id, tenant_id=tenant_id)
    if old.revoked_at is not None:
        raise Conflict(f"API key {key_id} is revoked; create a new one instead")
    revoke_key(session=session, key_id=key_id)
    return add_key(session=session, tenant_id=old.tenant_id, scopes=scopes_of(old),
                   name=old.name, expires_at=old.expires_at)


def find_tenant(*, session: Session, tenant: str) -> Tenant:
    """A tenant by id (`ten_…`) or name; NotFound otherwise."""
    found = session.get(Tenant, tenant) or session.exec(
        select(Tenant).where(Tenant.name == tenant)).first()
    if found is None:
        raise NotFound(f"tenant {tenant!r} not found")
    return found
