"""Migrate a memory store to a new embedder: re-embed every item another model embedded."""

from collections.abc import Callable
from contextlib import suppress

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from core.memory import store
from core.memory.search import Memory
from core.memory.tables import ITEMS


def stale_items(memory: Memory) -> int:
    """How many items another model than the memory's embedder embedded."""
    with memory.db.read() as session:
        query = select(func.count()).select_from(ITEMS).where(
            ITEMS.c.model != memory.embedder.name)
        return int(session.execute(query).scalar_one())


def reembed(memory: Memory, advance: Callable[[int], None]) -> int:
    """Re-embed stale items namespace by namespace, `memory.batch` at a time; returns how many.

    A namespace switches to the new model once all its items are moved; until then searching it
    by meaning with the new embedder is refused, so no search mixes two models' vectors.
    """
    model, moved = memory.embedder.name, 0
    with memory.db.read() as session:
        scopes = store.stale_scopes(session=session, model=model)
    for scope in scopes:
        while batch := _next_batch(memory, scope.scope):
            vectors = memory.embedder.embed([text for _, text in batch])
            with memory.db.write() as session:
                store.set_vectors(session=session, model=model, dim=memory.embedder.dim,
                                  vectors={i: v for (i, _), v in zip(batch, vectors, strict=True)})
            moved += len(batch)
            advance(len(batch))
        with suppress(DBAPIError), memory.db.write() as session:
            memory.index.prepare(session, memory.embedder.dim)
        with memory.db.write() as session:
            store.adopt_model(session=session, scope=scope.scope, model=model,
                              dim=memory.embedder.dim)
    return moved


def _next_batch(memory: Memory, scope: str) -> list[tuple[str, str]]:
    with memory.db.read() as session:
        return store.stale_batch(session=session, scope=scope, model=memory.embedder.name,
                                 limit=memory.batch)
