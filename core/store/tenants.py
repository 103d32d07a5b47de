"""Tenants and their API keys."""

import secrets
import uuid

from sqlmodel import Session, col, select

from core.deliveries import new_secret
from core.models import ApiKey, Tenant
from core.store.tables import sha256
from core.vault import Vault


def hash_key(raw_key: str) -> str:
    return sha256(raw_key)


def create_tenant_key(*, session: Session, tenant_name: str, vault: Vault,
                      operator: bool = False) -> tuple[Tenant, str]:
    """Create (or reuse) a tenant and give it a new API key; returns the raw key once.

    A new tenant gets its webhook signing secret now (sealed), so reading it changes nothing.
    `operator` makes the tenant an operator (it never unmakes one): its keys may also act on
    what all tenants share, such as the circuit breakers of shared upstreams.
    """
    tenant = session.exec(select(Tenant).where(Tenant.name == tenant_name)).first()
    if tenant is None:
        tenant = Tenant(id=f"ten_{uuid.uuid4().hex[:16]}", name=tenant_name)
    if not tenant.webhook_secret:
        tenant.webhook_secret = vault.seal(new_secret())
    tenant.operator = tenant.operator or operator
    session.add(tenant)
    session.flush()
    raw_key = f"ork_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(id=f"key_{uuid.uuid4().hex[:16]}", tenant_id=tenant.id,
                       key_hash=hash_key(raw_key)))
    return tenant, raw_key


def key_owner(*, session: Session, raw_key: str) -> tuple[str, str] | None:
    """The tenant id and key id of a live API key, or None."""
    row = session.exec(
        select(ApiKey.tenant_id, ApiKey.id).where(
            ApiKey.key_hash == hash_key(raw_key), col(ApiKey.revoked_at).is_(None)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


def tenant_for_key(*, session: Session, raw_key: str) -> str | None:
    """The tenant id a live API key belongs to, or None."""
    owner = key_owner(session=session, raw_key=raw_key)
    return owner[0] if owner is not None else None


def is_operator(*, session: Session, tenant_id: str) -> bool:
    """Whether the tenant is an operator."""
    tenant = session.get(Tenant, tenant_id)
    return tenant is not None and tenant.operator
