"""Memory rows: keyword-only functions on a session; the caller owns the transaction."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col
from sqlmodel import select as select_model

from core.errors import EmbedderMismatch, NotFound
from core.memory.tables import (
    ITEMS,
    SCOPES,
    MemoryItem,
    MemoryScope,
    Vector,
    item_id_of,
    item_key_of,
    scope_of,
)
from core.models import utcnow


@dataclass(frozen=True)
class Entry:
    """A text to remember, with its tags and metadata."""

    text: str
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def find_scope(*, session: Session, tenant_id: str, namespace: str) -> MemoryScope | None:
    return session.get(MemoryScope, scope_of(tenant_id, namespace))


def check_model(scope: MemoryScope | None, model: str) -> None:
    """Refuse to search or add to a namespace whose items another model embedded."""
    if scope is not None and scope.model != model:
        raise EmbedderMismatch(
            f"namespace '{scope.namespace}' is embedded with {scope.model} (dimension "
            f"{scope.dim}) but this worker embeds with {model}: run `orchestrator memory "
            "reembed` to migrate it, or search with mode=keyword")


def check_writable(*, session: Session, scope: MemoryScope | None, model: str) -> None:
    """Refuse a write by `model` to a namespace holding items of another model."""
    if scope is None or scope.model == model:
        return
    if count_items(session=session, scope=scope.scope) > 0:
        check_model(scope, model)


def claim_scope(*, session: Session, tenant_id: str, namespace: str, model: str,
                dim: int) -> MemoryScope:
    """The namespace's row for a write by `model` (created, or taken over if it is empty)."""
    scope = find_scope(session=session, tenant_id=tenant_id, namespace=namespace)
    check_writable(session=session, scope=scope, model=model)
    if scope is None:
        scope = MemoryScope(scope=scope_of(tenant_id, namespace), tenant_id=tenant_id,
                            namespace=namespace, model=model, dim=dim)
    scope.model, scope.dim = model, dim
    scope.version += 1
    scope.updated_at = utcnow()
    session.add(scope)
    return scope


def count_items(*, session: Session, scope: str, model: str | None = None) -> int:
    query = select(func.count()).select_from(ITEMS).where(ITEMS.c.scope == scope)
    if model is not None:
        query = query.where(ITEMS.c.model == model)
    return int(session.execute(query).scalar_one())


def known_ids(*, session: Session, ids: Iterable[str]) -> set[str]:
    """Which of these items are stored already."""
    rows = session.execute(select(ITEMS.c.id).where(ITEMS.c.id.in_(list(ids))))
    return {row[0] for row in rows}


def _insert(session: Session) -> Any:
    postgres = session.get_bind().dialect.name == "postgresql"
    return postgresql.insert(ITEMS) if postgres else sqlite.insert(ITEMS)


def put_items(*, session: Session, scope: MemoryScope, entries: list[Entry],
              vectors: dict[str, Vector]) -> list[str]:
    """Store the entries (new ones with their vector); an item stored already keeps its vector
    and takes the new tags and metadata. Returns the item ids in order."""
    ids, now = [item_id_of(scope.scope, entry.text) for entry in entries], utcnow()
    rows = {item_id: {"id": item_id, "tags": entry.tags, "metadata": entry.metadata,
                      "updated_at": now, "text": entry.text}
            for item_id, entry in zip(ids, entries, strict=True)}
    known = [{**row, "b_id": row.pop("id")} for i, row in rows.items() if i not in vectors]
    if known:
        session.execute(update(ITEMS).where(ITEMS.c.id == bindparam("b_id")).values(
            tags=bindparam("tags"), metadata=bindparam("metadata"),
            updated_at=bindparam("updated_at")), known)
    fresh = [{**row, "key": item_key_of(i), "scope": scope.scope, "tenant_id": scope.tenant_id,
              "namespace": scope.namespace, "model": scope.model, "dim": scope.dim,
              "embedding": vectors[i], "created_at": now}
             for i, row in rows.items() if i in vectors]
    if fresh:
        statement = _insert(session)
        # A concurrent write of the same text got there first: same item, same vector.
        session.execute(statement.on_conflict_do_update(index_elements=["id"], set_={
            "tags": statement.excluded.tags, "metadata": statement.excluded.metadata,
            "updated_at": statement.excluded.updated_at}), fresh)
    return ids


def get_items(*, session: Session, ids: list[str]) -> dict[str, MemoryItem]:
    rows = session.exec(select_model(MemoryItem).where(col(MemoryItem.id).in_(ids)))
    return {item.id: item for item in rows}


def delete_items(*, session: Session, tenant_id: str, ids: list[str]) -> list[str]:
    """Delete the tenant's items among `ids`; returns those that were there."""
    found = session.execute(select(ITEMS.c.id, ITEMS.c.scope).where(
        ITEMS.c.id.in_(ids), ITEMS.c.tenant_id == tenant_id)).all()
    if not found:
        return []
    session.execute(delete(ITEMS).where(ITEMS.c.id.in_([row[0] for row in found])))
    session.execute(update(SCOPES).where(SCOPES.c.scope.in_({row[1] for row in found}))
                 .values(version=SCOPES.c.version + 1, updated_at=utcnow()))
    return [row[0] for row in found]


def clear_namespace(*, session: Session, tenant_id: str, namespace: str) -> int:
    """Delete every item of one namespace of the tenant; returns how many there were."""
    scope = find_scope(session=session, tenant_id=tenant_id, namespace=namespace)
    if scope is None:
        raise NotFound(f"no memory namespace '{namespace}'")
    count = count_items(session=session, scope=scope.scope)
    session.execute(delete(ITEMS).where(ITEMS.c.scope == scope.scope))
    session.delete(scope)
    return count


def stats(*, session: Session, tenant_id: str) -> list[dict[str, Any]]:
    """Per namespace of the tenant: items, the model and dimension they are embedded with."""
    counts = dict(session.execute(
        select(ITEMS.c.scope, func.count()).where(ITEMS.c.tenant_id == tenant_id)
        .group_by(ITEMS.c.scope)).all())
    scopes = session.exec(select_model(MemoryScope).where(MemoryScope.tenant_id == tenant_id)
                          .order_by(col(MemoryScope.namespace)))
    return [{"namespace": s.namespace, "items": counts.get(s.scope, 0), "model": s.model,
             "dimension": s.dim} for s in scopes]


def stale_scopes(*, session: Session, model: str) -> list[MemoryScope]:
    """Namespaces embedded by another model than `model` (what `reembed` migrates)."""
    return list(session.exec(select_model(MemoryScope).where(MemoryScope.model != model)))


def stale_batch(*, session: Session, scope: str, model: str, limit: int) -> list[tuple[str, str]]:
    """Up to `limit` (id, text) of the scope's items not embedded by `model`."""
    rows = session.execute(select(ITEMS.c.id, ITEMS.c.text).where(
        ITEMS.c.scope == scope, ITEMS.c.model != model).order_by(ITEMS.c.id).limit(limit))
    return [(row[0], row[1]) for row in rows]


def set_vectors(*, session: Session, model: str, dim: int, vectors: dict[str, Vector]) -> None:
    for item_id, vector in vectors.items():
        session.execute(update(ITEMS).where(ITEMS.c.id == item_id).values(
            model=model, dim=dim, embedding=vector, updated_at=utcnow()))


def adopt_model(*, session: Session, scope: str, model: str, dim: int) -> None:
    """The namespace is now embedded by `model` (after `reembed` moved every item)."""
    session.execute(update(SCOPES).where(SCOPES.c.scope == scope).values(
        model=model, dim=dim, version=SCOPES.c.version + 1, updated_at=utcnow()))
