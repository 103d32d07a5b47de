"""Tenants' concurrency limits and model budgets, and the usage a budget is measured against."""

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

from sqlalchemy import bindparam, func
from sqlmodel import Session, col, select

from core.errors import NotFound
from core.models import ConcurrencyLimit, Job, JobStep, StepStatus, Tenant, TenantQuota, utcnow
from core.settings import LimitSettings

Period = Literal["day", "month"]
LIMITS = ConcurrencyLimit.__table__  # type: ignore[attr-defined]
RULES = select(LIMITS.c.pattern, LIMITS.c.max_running).where(  # read at every step's start
    LIMITS.c.tenant_id == bindparam("tenant_id"))


@dataclass(frozen=True)
class Rule:
    """A concurrency limit as it applies to one step: whose, which pattern, how many."""

    tenant_id: str
    pattern: str
    max_running: int

    @property
    def key(self) -> str:
        """The limit's name in Redis: one counter per tenant and pattern."""
        return f"{self.tenant_id}:{self.pattern}"


def _specificity(pattern: str) -> tuple[bool, int]:
    """Exact intents before globs, then longer patterns before shorter."""
    return (not any(c in pattern for c in "*?["), len(pattern))


def concurrency_rule(*, session: Session, tenant_id: str, intent: str,
                     defaults: dict[str, int], own: bool = True) -> Rule | None:
    """The limit a step of `intent` runs under: the tenant's rules over the settings' defaults,
    the most specific matching pattern deciding; None: unlimited. `own=False` says the tenant
    has no rules of its own (read with its job): only the defaults are looked at."""
    rules = dict(defaults)
    if own:
        rules.update({row.pattern: row.max_running
                      for row in session.execute(RULES, {"tenant_id": tenant_id})})
    matching = [p for p in rules if fnmatchcase(intent, p)]
    if not matching:
        return None
    pattern = max(matching, key=_specificity)
    return Rule(tenant_id, pattern, rules[pattern])


def concurrency_limits(*, session: Session, tenant_id: str) -> list[ConcurrencyLimit]:
    """A tenant's own rules."""
    return list(session.exec(select(ConcurrencyLimit).where(
        ConcurrencyLimit.tenant_id == tenant_id).order_by(col(ConcurrencyLimit.pattern))))


def _tenant(session: Session, tenant_id: str) -> None:
    if session.get(Tenant, tenant_id) is None:
        raise NotFound(f"tenant {tenant_id} not found")


def set_concurrency_limit(*, session: Session, tenant_id: str, pattern: str,
                          max_running: int) -> None:
    """Set (or replace) a tenant's rule for `pattern`."""
    _tenant(session, tenant_id)
    row = session.get(ConcurrencyLimit, (tenant_id, pattern))
    row = row or ConcurrencyLimit(tenant_id=tenant_id, pattern=pattern, max_running=0)
    row.max_running = max_running
    session.add(row)


def clear_concurrency_limit(*, session: Session, tenant_id: str, pattern: str) -> bool:
    """Remove a tenant's rule for `pattern`; whether there was one."""
    row = session.get(ConcurrencyLimit, (tenant_id, pattern))
    if row is not None:
        session.delete(row)
    return row is not None


@dataclass(frozen=True)
class Budget:
    """What a tenant may spend on models per day and per month (0: unlimited)."""

    day_usd: float = 0.0
    month_usd: float = 0.0
    day_tokens: int = 0
    month_tokens: int = 0

    def public(self) -> dict[str, Any]:
        return {"day_usd": self.day_usd, "month_usd": self.month_usd,
                "day_tokens": self.day_tokens, "month_tokens": self.month_tokens}

    def limits(self, period: Period) -> tuple[float, int]:
        """USD and tokens allowed in `period` (0: unlimited)."""
        if period == "day":
            return self.day_usd, self.day_tokens
        return self.month_usd, self.month_tokens


def default_budget(settings: LimitSettings) -> Budget:
    """The budget every tenant has unless the store holds its own."""
    return Budget(settings.budget_day_usd, settings.budget_month_usd,
                  settings.budget_day_tokens, settings.budget_month_tokens)


def tenant_budget(*, session: Session, tenant_id: str, default: Budget) -> Budget:
    """The tenant's own budget, else `default` (the settings')."""
    row = session.get(TenantQuota, tenant_id)
    if row is None:
        return default
    return Budget(row.day_usd, row.month_usd, row.day_tokens, row.month_tokens)


def set_tenant_budget(*, session: Session, tenant_id: str, budget: Budget) -> None:
    """Set (or replace) a tenant's budget."""
    _tenant(session, tenant_id)
    row = session.get(TenantQuota, tenant_id) or TenantQuota(tenant_id=tenant_id)
    row.day_usd, row.month_usd = budget.day_usd, budget.month_usd
    row.day_tokens, row.month_tokens = budget.day_tokens, budget.month_tokens
    row.updated_at = utcnow()
    session.add(row)


def clear_tenant_budget(*, session: Session, tenant_id: str) -> bool:
    """Remove a tenant's budget (the settings' applies again); whether there was one."""
    row = session.get(TenantQuota, tenant_id)
    if row is not None:
        session.delete(row)
    return row is not None


def period_start(period: Period, now: datetime | None = None) -> datetime:
    """The start of the current UTC day or calendar month."""
    now = (now or utcnow()).astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


@dataclass
class Usage:
    """A tenant's model use and jobs since the start of a period."""

    period: Period
    since: datetime
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    calls: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def model_usage(*, session: Session, tenant_id: str, period: Period) -> Usage:
    """The model usage the tenant's steps recorded (their output's `usage`) in the period."""
    since = period_start(period)
    outputs = session.exec(
        select(JobStep.output).join(Job, col(Job.id) == col(JobStep.job_id))
        .where(Job.tenant_id == tenant_id, JobStep.status == StepStatus.succeeded,
               col(JobStep.intent).like("llm.%"), col(JobStep.finished_at) >= since))
    usage = Usage(period, since)
    for output in outputs:
        used = output.get("usage") if isinstance(output, dict) else None
        if isinstance(used, dict):
            usage.prompt_tokens += int(used.get("prompt_tokens") or 0)
            usage.completion_tokens += int(used.get("completion_tokens") or 0)
            usage.cost += float(used.get("cost") or 0.0)
            usage.calls += int(used.get("calls") or 0)
    return usage


def intent_counts(*, session: Session, tenant_id: str, period: Period) -> dict[str, int]:
    """The tenant's jobs submitted in the period, by intent."""
    rows = session.exec(
        select(Job.intent, func.count()).where(
            Job.tenant_id == tenant_id, col(Job.created_at) >= period_start(period))
        .group_by(col(Job.intent)))
    return dict(Counter({intent: int(count) for intent, count in rows}))


PERIOD_WORDS = {"day": "today", "month": "this month"}


def budget_refusal(*, session: Session, tenant_id: str, default: Budget,
                   pending: tuple[int, float] = (0, 0.0)) -> str | None:
    """Why the tenant may not use a model now (its day's or month's budget is spent, counting
    the `pending` tokens and cost of a step not yet recorded), or None."""
    budget = tenant_budget(session=session, tenant_id=tenant_id, default=default)
    periods: tuple[Period, ...] = ("day", "month")
    for period in periods:
        usd, tokens = budget.limits(period)
        if not usd and not tokens:
            continue
        used = model_usage(session=session, tenant_id=tenant_id, period=period)
        cost, count = used.cost + pending[1], used.tokens + pending[0]
        when = PERIOD_WORDS[period]
        if usd and cost >= usd:
            return f"tenant budget exhausted: {cost:.2f} of {usd:.2f} USD {when}"
        if tokens and count >= tokens:
            return f"tenant budget exhausted: {count} of {tokens} tokens {when}"
    return None
