"""The vector and keyword indexes of the memory store, one per backend, with the same behaviour.

- Postgres: pgvector's HNSW index (cosine) on `embedding::vector(dim)`, one partial index per
  dimension, and a generated `tsvector` ('english') with a GIN index, ranked by `ts_rank_cd`.
- SQLite: exact cosine scoring with numpy over the namespace's vectors, which a worker process
  keeps in memory (`MEMORY_CACHE_MB`) until the namespace's version changes; FTS5 with BM25.
  (sqlite-vec needs `enable_load_extension`, which this Python's sqlite3 lacks.)

Keyword queries match any of the query's words (OR); the ranking rewards items with more and
rarer ones. On Postgres, items with every word come first, then the best of at most
`LOOSE_CAP` items sharing some word (ranking every such item would read most of a namespace).
"""

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import bindparam, text
from sqlmodel import Session

from core.memory.search import Hit, Index
from core.memory.tables import MemoryScope, Vector

HNSW_MAX_DIM = 2000  # pgvector indexes `vector` up to 2,000 dimensions
LOOSE_CAP = 1000  # items sharing any query word that Postgres ranks, at most
# plainto_tsquery stems and drops stop words; its AND turned into OR: any word matches.
LOOSE = ("CAST(replace(CAST(plainto_tsquery('english', :q) AS text), ' & ', ' | ') "
         "AS tsquery)")
WORD = re.compile(r'[^\s"]+')
STOP_WORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "how",
    "i", "in", "is", "it", "its", "of", "on", "or", "that", "the", "their", "this", "to", "was",
    "were", "what", "when", "where", "which", "who", "why", "will", "with", "you", "your",
))


def tag_filter(column: str, tags: list[str], dialect: str) -> tuple[str, dict[str, Any]]:
    """SQL requiring every tag of `tags` on the item, and its parameters."""
    if not tags:
        return "", {}
    if dialect == "postgresql":
        import json

        return f" AND {column}::jsonb @> CAST(:tags AS jsonb)", {"tags": json.dumps(tags)}
    clauses = [f" AND EXISTS (SELECT 1 FROM json_each({column}) WHERE value = :tag{i})"
               for i in range(len(tags))]
    return "".join(clauses), {f"tag{i}": tag for i, tag in enumerate(tags)}


def fts_terms(query: str) -> str:
    """An FTS5 expression matching any word of `query` (each quoted: no operators get in)."""
    words = [w for w in WORD.findall(query) if re.search(r"\w", w)]
    kept = [w for w in words if w.lower() not in STOP_WORDS] or words
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(kept))


def top(scores: np.ndarray[Any, np.dtype[np.float32]], limit: int) -> list[int]:
    """Positions of the `limit` highest scores, best first."""
    if limit >= len(scores):
        return [int(i) for i in np.argsort(-scores)]
    best = np.argpartition(-scores, limit)[:limit]
    return [int(i) for i in best[np.argsort(-scores[best])]]


@dataclass
class Vectors:
    """One namespace's vectors as a worker process holds them."""

    version: int
    ids: list[str]
    matrix: np.ndarray[Any, np.dtype[np.float32]]
    tags: dict[str, np.ndarray[Any, np.dtype[np.intp]]]

    @property
    def size(self) -> int:
        return int(self.matrix.nbytes)

    def rows_with(self, tags: list[str]) -> np.ndarray[Any, np.dtype[np.intp]]:
        rows = np.arange(len(self.ids))
        for tag in tags:
            rows = np.intersect1d(rows, self.tags.get(tag, np.empty(0, dtype=np.intp)))
        return rows


class SqliteIndex:
    """Exact vector search with numpy over cached vectors, FTS5/BM25 for keywords."""

    def __init__(self, cache_bytes: int) -> None:
        self._cache: OrderedDict[tuple[str, str], Vectors] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._lock = threading.Lock()

    def prepare(self, session: Session, dim: int) -> None:
        return None

    def semantic(self, session: Session, scope: MemoryScope, vector: Vector, limit: int,
                 tags: list[str]) -> list[Hit]:
        vectors = self._vectors(session, scope)
        rows = vectors.rows_with(tags) if tags else None
        matrix = vectors.matrix if rows is None else vectors.matrix[rows]
        scores = matrix @ np.asarray(vector, dtype=np.float32)
        best = top(scores, limit)
        ids = vectors.ids if rows is None else [vectors.ids[r] for r in rows]
        return [(ids[i], float(scores[i])) for i in best]

    def _vectors(self, session: Session, scope: MemoryScope) -> Vectors:
        key = (scope.scope, scope.model)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.version == scope.version:
                self._cache.move_to_end(key)
                return cached
        loaded = self._load(session, scope)
        with self._lock:
            self._keep(key, loaded)
        return loaded

    def _load(self, session: Session, scope: MemoryScope) -> Vectors:
        rows = session.connection().execute(text(
            "SELECT id, embedding, tags FROM memory_items WHERE scope = :scope AND model = :model"
            " ORDER BY id"), {"scope": scope.scope, "model": scope.model}).all()
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4").reshape(
            len(rows), scope.dim) if rows else np.empty((0, scope.dim), dtype=np.float32)
        by_tag: dict[str, list[int]] = {}
        for position, row in enumerate(rows):
            for tag in _tags(row[2]):
                by_tag.setdefault(tag, []).append(position)
        return Vectors(scope.version, [row[0] for row in rows], matrix,
                       {tag: np.asarray(p, dtype=np.intp) for tag, p in by_tag.items()})

    def _keep(self, key: tuple[str, str], vectors: Vectors) -> None:
        self._cache.pop(key, None)
        if vectors.size > self._cache_bytes:
            return
        self._cache[key] = vectors
        while sum(v.size for v in self._cache.values()) > self._cache_bytes:
            self._cache.popitem(last=False)

    def keyword(self, session: Session, scope: str, query: str, limit: int,
                tags: list[str]) -> list[Hit]:
        terms = fts_terms(query)
        if not terms:
            return []
        where, params = tag_filter("m.tags", tags, "sqlite")
        rows = session.connection().execute(text(
            "SELECT m.id, -bm25(memory_fts, 0.0, 1.0) AS score FROM memory_fts "
            "JOIN memory_items m ON m.key = memory_fts.rowid "
            f"WHERE memory_fts MATCH :match{where} ORDER BY bm25(memory_fts, 0.0, 1.0) "
            "LIMIT :limit"), {"match": f'scope:"{scope}" AND ({terms})', "limit": limit,
                             **params}).all()
        return [(row[0], float(row[1])) for row in rows]


def _tags(value: Any) -> list[str]:
    import json

    loaded = json.loads(value) if isinstance(value, str | bytes) else value
    return [str(tag) for tag in loaded or []]


class PostgresIndex:
    """pgvector HNSW for vectors, a `tsvector` with GIN for keywords."""

    def __init__(self) -> None:
        self._prepared: set[int] = set()

    def prepare(self, session: Session, dim: int) -> None:
        """Make sure the HNSW index for this dimension exists (256 comes with the migration)."""
        if dim in self._prepared or dim > HNSW_MAX_DIM:
            return
        session.connection().execute(text(
            f"CREATE INDEX IF NOT EXISTS ix_memory_items_hnsw_{dim} ON memory_items USING "
            f"hnsw ((embedding::vector({dim})) vector_cosine_ops) WHERE dim = {dim}"))
        self._prepared.add(dim)

    def semantic(self, session: Session, scope: MemoryScope, vector: Vector, limit: int,
                 tags: list[str]) -> list[Hit]:
        dim = scope.dim
        where, params = tag_filter("tags", tags, "postgresql")
        connection = session.connection()
        # Filters are applied while the HNSW graph is walked (pgvector 0.8 iterative scans),
        # so a small namespace in a large table still gets its `limit` nearest items. Set for
        # the connection, not the transaction: a read has none (`Database.read`). Every
        # search sets both before its query, so what a pooled connection keeps is never used.
        connection.execute(text("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', "
                                "false), set_config('hnsw.ef_search', :ef, false)"),
                           {"ef": str(max(40, 2 * limit))})
        distance = f"embedding::vector({dim}) <=> :q"
        statement = text(
            f"SELECT id, 1 - ({distance}) AS score FROM memory_items WHERE dim = {dim} "
            f"AND scope = :scope AND model = :model{where} ORDER BY {distance} LIMIT :limit"
        ).bindparams(bindparam("q", type_=VECTOR(dim)))
        rows = connection.execute(statement, {"q": vector, "scope": scope.scope,
                                              "model": scope.model, "limit": limit,
                                              **params}).all()
        return sorted(((row[0], float(row[1])) for row in rows), key=lambda hit: -hit[1])

    def keyword(self, session: Session, scope: str, query: str, limit: int,
                tags: list[str]) -> list[Hit]:
        """Items with every word first, then items with any (ranked among `LOOSE_CAP`)."""
        where, params = tag_filter("tags", tags, "postgresql")
        params = {"q": query, "scope": scope, "limit": limit, "cap": LOOSE_CAP, **params}
        connection = session.connection()
        strict = connection.execute(text(
            f"SELECT id, ts_rank_cd(tsv, {LOOSE}) AS score FROM memory_items "
            "WHERE scope = :scope AND tsv @@ plainto_tsquery('english', :q)"
            f"{where} ORDER BY score DESC LIMIT :limit"), params).all()
        hits = [(row[0], float(row[1])) for row in strict]
        if len(hits) >= limit:
            return hits
        # Ranking every item that shares one common word would read most of the namespace:
        # rank a bounded sample of them. Items with every word were all found above; an item
        # with only some words can be missed when more than LOOSE_CAP items match.
        loose = connection.execute(text(
            f"SELECT id, ts_rank_cd(tsv, {LOOSE}) AS score FROM (SELECT id, tsv FROM "
            f"memory_items WHERE scope = :scope AND tsv @@ {LOOSE}{where} LIMIT :cap) AS m "
            "ORDER BY score DESC LIMIT :limit"), params).all()
        seen = {hit[0] for hit in hits}
        hits += [(row[0], float(row[1])) for row in loose if row[0] not in seen]
        return hits[:limit]


def build_index(dialect: str, cache_bytes: int) -> Index:
    """The index for a job store of this dialect."""
    return PostgresIndex() if dialect == "postgresql" else SqliteIndex(cache_bytes)
