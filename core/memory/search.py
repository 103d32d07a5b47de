"""Search and write flows over an embedder and an index; hybrid ranking by reciprocal rank fusion.

Hybrid search asks two lists of the index — the items nearest the query's embedding (cosine)
and the best full-text matches (BM25 on SQLite, `ts_rank_cd` on Postgres) — and fuses them by
rank alone: an item scores Σ 1/(rrf_k + rank) over the lists it is in. Ranks, not raw scores,
are added because cosine similarities and text ranks are on scales that cannot be compared.
"""

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from core.db import Database
from core.memory import store
from core.memory.store import Entry
from core.memory.tables import MemoryItem, MemoryScope, Vector, item_id_of, scope_of

Hit = tuple[str, float]
Embed = Callable[[list[str]], np.ndarray[Any, np.dtype[np.float32]]]


class Mode(StrEnum):
    """Which signals rank a search."""

    hybrid = "hybrid"
    semantic = "semantic"
    keyword = "keyword"


class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors; `name` is stored with every item."""

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]: ...

    def close(self) -> None: ...


class Index(Protocol):
    """Nearest vectors and full-text matches of one store (SQLite or Postgres)."""

    def semantic(self, session: Session, scope: MemoryScope, vector: Vector, limit: int,
                 tags: list[str]) -> list[Hit]: ...

    def keyword(self, session: Session, scope: str, query: str, limit: int,
                tags: list[str]) -> list[Hit]: ...

    def prepare(self, session: Session, dim: int) -> None: ...


@dataclass
class Ranked:
    """One result: its fused score, and each signal's score and rank (None: not in that list)."""

    item_id: str
    score: float
    scores: dict[str, float | None] = field(default_factory=dict)
    ranks: dict[str, int | None] = field(default_factory=dict)


def fuse(lists: dict[str, list[Hit]], rrf_k: int, limit: int) -> list[Ranked]:
    """Reciprocal rank fusion of ranked lists (best first); ties keep the first list's order."""
    fused: dict[str, Ranked] = {}
    for signal, hits in lists.items():
        for rank, (item_id, score) in enumerate(hits, start=1):
            entry = fused.setdefault(item_id, Ranked(item_id, 0.0, dict.fromkeys(lists),
                                                     dict.fromkeys(lists)))
            entry.score += 1.0 / (rrf_k + rank)
            entry.scores[signal], entry.ranks[signal] = score, rank
    return sorted(fused.values(), key=lambda r: -r.score)[:limit]


def single(signal: str, hits: list[Hit], others: list[str], limit: int) -> list[Ranked]:
    """One signal's list as results: its own score is the score."""
    return [Ranked(item_id, score, {signal: score, **dict.fromkeys(others)},
                   {signal: rank, **dict.fromkeys(others)})
            for rank, (item_id, score) in enumerate(hits[:limit], start=1)]


@dataclass(frozen=True)
class Query:
    """A search of one tenant's namespace."""

    tenant_id: str
    namespace: str
    text: str
    k: int = 5
    mode: Mode = Mode.hybrid
    tags: list[str] = field(default_factory=list)


def rank(session: Session, index: Index, embed: Embed, model: str, query: Query,
         candidates: int, rrf_k: int) -> list[Ranked]:
    """The ranked item ids of a search (the rows are read afterwards)."""
    scope = store.find_scope(session=session, tenant_id=query.tenant_id,
                             namespace=query.namespace)
    if scope is None:
        return []
    depth = max(candidates, query.k) if query.mode == Mode.hybrid else query.k
    lists: dict[str, list[Hit]] = {}
    if query.mode in (Mode.hybrid, Mode.semantic):
        store.check_model(scope, model)
        vector = embed([query.text])[0]
        lists["semantic"] = index.semantic(session, scope, vector, depth, query.tags)
    if query.mode in (Mode.hybrid, Mode.keyword):
        lists["keyword"] = index.keyword(session, scope.scope, query.text, depth, query.tags)
    if query.mode == Mode.hybrid:
        return fuse(lists, rrf_k, query.k)
    signal = query.mode.value
    other = "keyword" if signal == "semantic" else "semantic"
    return single(signal, lists[signal], [other], query.k)


def result(item: MemoryItem, ranked: Ranked) -> dict[str, Any]:
    """A search result as the intent answers it."""
    return {"item_id": item.id, "text": item.text, "tags": item.tags, "metadata": item.meta,
            "namespace": item.namespace, "score": round(ranked.score, 6),
            "scores": {k: None if v is None else round(v, 6) for k, v in ranked.scores.items()},
            "ranks": ranked.ranks, "created_at": item.created_at.isoformat()}


def results(session: Session, ranked: list[Ranked]) -> list[dict[str, Any]]:
    items = store.get_items(session=session, ids=[r.item_id for r in ranked])
    return [result(items[r.item_id], r) for r in ranked if r.item_id in items]


def embed_new(embed: Embed, fresh: dict[str, str], batch: int) -> dict[str, Vector]:
    """Embeddings of `fresh` texts (by item id), `batch` texts per call."""
    ids, texts = list(fresh), list(fresh.values())
    vectors: dict[str, Vector] = {}
    for start in range(0, len(texts), batch):
        embedded = embed(texts[start:start + batch])
        vectors.update(zip(ids[start:start + batch], embedded, strict=True))
    return vectors


def unknown_texts(session: Session, tenant_id: str, namespace: str,
                  entries: list[Entry]) -> dict[str, str]:
    """The entries' texts not stored yet in the namespace, by their item id."""
    scope = scope_of(tenant_id, namespace)
    fresh = {item_id_of(scope, e.text): e.text for e in entries}
    for known in store.known_ids(session=session, ids=list(fresh)):
        fresh.pop(known)
    return fresh


@dataclass(frozen=True)
class Memory:
    """The job store, an embedder and the store's index: what writes and searches need."""

    db: Database
    embedder: Embedder
    index: Index
    batch: int = 64
    candidates: int = 50
    rrf_k: int = 60


def remember(memory: Memory, tenant_id: str, namespace: str,
             entries: list[Entry]) -> list[tuple[str, bool]]:
    """Store the entries, embedding (in batches, outside any transaction) only the new texts.

    Returns each entry's item id and whether it was new."""
    model = memory.embedder.name
    with memory.db.read() as session:
        scope = store.find_scope(session=session, tenant_id=tenant_id, namespace=namespace)
        store.check_writable(session=session, scope=scope, model=model)
        fresh = unknown_texts(session, tenant_id, namespace, entries)
    vectors = embed_new(memory.embedder.embed, fresh, memory.batch)
    dim = memory.embedder.dim
    with suppress(DBAPIError), memory.db.write() as session:
        memory.index.prepare(session, dim)  # a concurrent creator of the same index wins
    with memory.db.write() as session:
        claimed = store.claim_scope(session=session, tenant_id=tenant_id, namespace=namespace,
                                    model=model, dim=dim)
        ids = store.put_items(session=session, scope=claimed, entries=entries, vectors=vectors)
    return [(item_id, item_id in vectors) for item_id in ids]


def find(memory: Memory, query: Query) -> list[dict[str, Any]]:
    """The results of one search, best first."""
    with memory.db.read() as session:
        ranked = rank(session, memory.index, memory.embedder.embed, memory.embedder.name, query,
                      memory.candidates, memory.rrf_k)
        return results(session, ranked)
