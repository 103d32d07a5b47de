"""Each tenant's own rate limits (`orchestrator limits set`), over the RATE_LIMIT_* settings."""

from dataclasses import dataclass

from sqlmodel import Session

from core.models import TenantLimits


@dataclass(frozen=True)
class Rate:
    """A token bucket: `rate` requests a second sustained, `burst` at once; rate 0 is none."""

    rate: float
    burst: int


@dataclass(frozen=True)
class Rates:
    """The buckets a request of a key draws from: its key's and its tenant's."""

    key: Rate
    tenant: Rate


def tenant_limits(*, session: Session, tenant_id: str) -> TenantLimits | None:
    """The tenant's overrides, if it has any."""
    return session.get(TenantLimits, tenant_id)


def rates_for(overrides: TenantLimits | None, defaults: Rates) -> Rates:
    """The defaults with whatever the tenant overrides."""
    if overrides is None:
        return defaults

    def pick(value: float | None, default: float) -> float:
        return default if value is None else value

    return Rates(
        Rate(pick(overrides.key_rate, defaults.key.rate),
             int(pick(overrides.key_burst, defaults.key.burst))),
        Rate(pick(overrides.tenant_rate, defaults.tenant.rate),
             int(pick(overrides.tenant_burst, defaults.tenant.burst))))


def set_limits(*, session: Session, tenant_id: str, **values: float | int | None) -> TenantLimits:
    """Set some of the tenant's overrides (a None leaves that one as it is)."""
    row = session.get(TenantLimits, tenant_id) or TenantLimits(tenant_id=tenant_id)
    for name, value in values.items():
        if value is not None:
            setattr(row, name, value)
    session.add(row)
    return row


def clear_limits(*, session: Session, tenant_id: str) -> None:
    """Drop the tenant's overrides: the settings apply again."""
    row = session.get(TenantLimits, tenant_id)
    if row is not None:
        session.delete(row)
