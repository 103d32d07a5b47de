"""Every secret the job store holds, re-sealed in place: after a key rotation, or to seal the
plaintext rows written before sealing began (migration 0010 and `orchestrator secrets rotate`).

The tables are named here by their columns only, so a migration can use this as it stands.
"""

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.store.waits import SEALED_FIELDS

Change = Callable[[str], str | None]  # the new value of a secret, or None to keep it

EVENTS = sa.table("job_events", sa.column("id"), sa.column("type"), sa.column("data", sa.JSON))
TOOLS = sa.table("http_tools", sa.column("id"), sa.column("headers", sa.JSON))
TENANTS = sa.table("tenants", sa.column("id"), sa.column("webhook_secret"),
                   sa.column("previous_webhook_secret"))


def reseal(connection: Connection, change: Change) -> int:
    """Apply `change` to every stored secret; returns how many values it changed."""
    return _events(connection, change) + _tools(connection, change) + _tenants(connection, change)


def _events(connection: Connection, change: Change) -> int:
    changed = 0
    query = sa.select(EVENTS).where(EVENTS.c.type.in_(list(SEALED_FIELDS)))
    for row in connection.execute(query).all():
        field = SEALED_FIELDS[row.type]
        value = row.data.get(field)
        new = change(value) if isinstance(value, str) else None
        if new is not None:
            connection.execute(sa.update(EVENTS).where(EVENTS.c.id == row.id)
                               .values(data={**row.data, field: new}))
            changed += 1
    return changed


def _tools(connection: Connection, change: Change) -> int:
    changed = 0
    for row in connection.execute(sa.select(TOOLS)).all():
        new = {name: change(value) for name, value in row.headers.items()}
        if any(value is not None for value in new.values()):
            headers = {name: new[name] or value for name, value in row.headers.items()}
            connection.execute(sa.update(TOOLS).where(TOOLS.c.id == row.id)
                               .values(headers=headers))
            changed += sum(value is not None for value in new.values())
    return changed


def _tenants(connection: Connection, change: Change) -> int:
    changed = 0
    for row in connection.execute(sa.select(TENANTS)).all():
        new = {column: change(getattr(row, column)) for column in
               ("webhook_secret", "previous_webhook_secret") if getattr(row, column)}
        new = {column: value for column, value in new.items() if value is not None}
        if new:
            connection.execute(sa.update(TENANTS).where(TENANTS.c.id == row.id).values(**new))
            changed += len(new)
    return changed
