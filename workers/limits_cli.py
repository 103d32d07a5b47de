"""`orchestrator limits`: tenants' concurrency limits and model budgets in the job store."""

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from core.errors import NotFound
from core.settings import get_settings

if TYPE_CHECKING:  # the store is imported when a command runs, not with the CLI
    from sqlmodel import Session

    from core.store.limits import Budget

T = TypeVar("T")
limits = typer.Typer(help="Concurrency limits and model budgets per tenant.",
                     no_args_is_help=True)
concurrency = typer.Typer(help="At most N steps of an intent (or glob) running per tenant.",
                          no_args_is_help=True)
budget = typer.Typer(help="Model tokens and USD a tenant may use per UTC day and month.",
                     no_args_is_help=True)
limits.add_typer(concurrency, name="concurrency")
limits.add_typer(budget, name="budget")
TenantArg = Annotated[str, typer.Argument(help="The tenant's id (ten_…) or name.")]


def _in_store(change: Callable[["Session", str], T], tenant: str) -> T:
    """Run `change` with the tenant's id in one transaction; an unknown tenant is one line."""
    from sqlalchemy.exc import SQLAlchemyError
    from sqlmodel import select

    from core.db import Database
    from core.models import Tenant

    db = Database(get_settings().database.url)
    try:
        with db.write() as session:
            found = session.get(Tenant, tenant) or session.exec(
                select(Tenant).where(Tenant.name == tenant)).first()
            if found is None:
                raise NotFound(f"tenant {tenant} not found (give its id, ten_…, or its name)")
            return change(session, found.id)
    except NotFound as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except SQLAlchemyError as exc:
        typer.echo(f"could not use the job store at DATABASE_URL ({type(exc).__name__}); is it "
                   "reachable and migrated (`orchestrator migrate`)?", err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()


@concurrency.command("set")
def concurrency_set(
    tenant: TenantArg,
    pattern: Annotated[str, typer.Argument(help="An intent (ssh.exec) or a glob (agent.*).")],
    most: Annotated[int, typer.Argument(min=1, help="Steps that may run at once.")],
) -> None:
    """Let at most MOST steps whose intent matches PATTERN run at once for the tenant."""
    from core.store import limits as store

    _in_store(lambda s, t: store.set_concurrency_limit(session=s, tenant_id=t, pattern=pattern,
                                                       max_running=most), tenant)
    typer.echo(f"{pattern}: at most {most} running")


@concurrency.command("show")
def concurrency_show(tenant: TenantArg) -> None:
    """The tenant's own rules, then the defaults of LIMITS_CONCURRENCY."""
    from core.store import limits as store

    rows = _in_store(lambda s, t: [(r.pattern, r.max_running) for r in
                                   store.concurrency_limits(session=s, tenant_id=t)], tenant)
    for pattern, most in rows:
        typer.echo(f"{pattern}: at most {most} running")
    for pattern, most in get_settings().limits.concurrency.items():
        if pattern not in dict(rows):
            typer.echo(f"{pattern}: at most {most} running (LIMITS_CONCURRENCY)")


@concurrency.command("clear")
def concurrency_clear(tenant: TenantArg, pattern: str) -> None:
    """Remove the tenant's rule for PATTERN (the default, if any, applies again)."""
    from core.store import limits as store

    found = _in_store(lambda s, t: store.clear_concurrency_limit(session=s, tenant_id=t,
                                                                 pattern=pattern), tenant)
    typer.echo(f"{pattern}: cleared" if found else f"{pattern}: no rule of this tenant")


Amount = Annotated[float, typer.Option(min=0, help="0: unlimited.")]
Tokens = Annotated[int, typer.Option(min=0, help="0: unlimited.")]


@budget.command("set")
def budget_set(tenant: TenantArg, day_usd: Amount = 0.0, month_usd: Amount = 0.0,
               day_tokens: Tokens = 0, month_tokens: Tokens = 0) -> None:
    """Set the tenant's model budget (replacing LIMITS_BUDGET_* for it)."""
    from core.store import limits as store

    chosen = store.Budget(day_usd, month_usd, day_tokens, month_tokens)
    _in_store(lambda s, t: store.set_tenant_budget(session=s, tenant_id=t, budget=chosen),
              tenant)
    typer.echo(_describe(chosen))


@budget.command("show")
def budget_show(tenant: TenantArg) -> None:
    """The budget the tenant's prompts count against."""
    from core.store import limits as store

    default = store.default_budget(get_settings().limits)
    typer.echo(_describe(_in_store(lambda s, t: store.tenant_budget(
        session=s, tenant_id=t, default=default), tenant)))


@budget.command("clear")
def budget_clear(tenant: TenantArg) -> None:
    """Remove the tenant's budget: LIMITS_BUDGET_* applies again."""
    from core.store import limits as store

    found = _in_store(lambda s, t: store.clear_tenant_budget(session=s, tenant_id=t), tenant)
    typer.echo("cleared" if found else "no budget of this tenant")


def _describe(chosen: "Budget") -> str:
    def one(value: float, unit: str) -> str:
        return f"{value:g} {unit}" if value else "unlimited"
    return (f"day: {one(chosen.day_usd, 'USD')}, {one(chosen.day_tokens, 'tokens')}; "
            f"month: {one(chosen.month_usd, 'USD')}, {one(chosen.month_tokens, 'tokens')}")
