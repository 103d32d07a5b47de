"""Tenants and their API keys."""

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, select

from core.deliveries import new_secret
from core.models import ALL_SCOPES, Scope, Tenant
from core.store.keys import add_key, key_info
from core.vault import Vault

# What `orchestrator keys create` gives without `--scope`: all a tenant may do (an operator
# tenant's keys may also do what only operators may).
TENANT_SCOPES = ALL_SCOPES - {Scope.operator}


def create_tenant_key(*, session: Session, tenant_name: str, vault: Vault,
                      operator: bool = False, scopes: Iterable[Scope] | None = None,
                      name: str = "", expires_at: datetime | None = None) -> tuple[Tenant, str]:
    """Create (or reuse) a tenant and give it a new API key; returns the raw key once.

    A new tenant gets its webhook signing secret now (sealed), so reading it changes nothing.
    `operator` makes the tenant an operator (it never unmakes one) and gives the key the
    `operator` scope: it may also act on what all tenants share, such as the circuit breakers
    of shared upstreams. Without `scopes` the key may do all a tenant may (TENANT_SCOPES).
    """
    tenant = session.exec(select(Tenant).where(Tenant.name == tenant_name)).first()
    if tenant is None:
        tenant = Tenant(id=f"ten_{uuid.uuid4().hex[:16]}", name=tenant_name)
    if not tenant.webhook_secret:
        tenant.webhook_secret = vault.seal(new_secret())
    tenant.operator = tenant.operator or operator
    session.add(tenant)
    session.flush()
    chosen = set(TENANT_SCOPES if scopes is None else scopes)
    if operator:
        chosen.add(Scope.operator)
    _, raw_key = add_key(session=session, tenant_id=tenant.id, scopes=chosen, name=name,
                         expires_at=expires_at)
    return tenant, raw_key


def tenant_for_key(*, session: Session, raw_key: str) -> str | None:
    """The tenant id a live API key belongs to, or None."""
    info = key_info(session=session, raw_key=raw_key)
    return info.tenant_id if info is not None else None


def is_operator(*, session: Session, tenant_id: str) -> bool:
    """Whether the tenant is an operator."""
    tenant = session.get(Tenant, tenant_id)
    return tenant is not None and tenant.operator
