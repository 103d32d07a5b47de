"""Memory tables: one row per item (its text, tags, embedding and the model that made it)."""

import hashlib
from datetime import datetime
from typing import Any

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import Field, SQLModel

from core.models import utcnow

Vector = np.ndarray[Any, np.dtype[np.float32]]


class Embedding(TypeDecorator[Vector]):
    """A float32 vector: pgvector's `vector` on Postgres, little-endian bytes on SQLite."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(VECTOR())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Vector | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return np.asarray(value, dtype="<f4").tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> Vector | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return np.asarray(value, dtype=np.float32)
        return np.frombuffer(value, dtype="<f4")


def scope_of(tenant_id: str, namespace: str) -> str:
    """The key of one tenant's namespace: every query filters on it, so tenants never mix."""
    return "s" + hashlib.sha256(f"{tenant_id}\0{namespace}".encode()).hexdigest()[:32]


def item_id_of(scope: str, text: str) -> str:
    """The same text in the same namespace is the same item."""
    return "mem_" + hashlib.sha256(f"{scope}\0{text}".encode()).hexdigest()[:28]


def item_key_of(item_id: str) -> int:
    """A stable 63-bit integer for an item: the rowid of its SQLite full-text entry."""
    return int(item_id[4:20], 16) >> 1


class MemoryItem(SQLModel, table=True):
    """A text in a tenant's namespace, its embedding and the model and dimension that made it."""

    __tablename__ = "memory_items"
    __table_args__ = (Index("ix_memory_items_scope_model", "scope", "model"),)
    id: str = Field(primary_key=True, max_length=40)
    key: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    scope: str = Field(max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=64)
    namespace: str = Field(max_length=200)
    text: str = Field(sa_column=Column(Text, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    meta: dict[str, Any] = Field(default_factory=dict,
                                 sa_column=Column("metadata", JSON, nullable=False))
    model: str = Field(max_length=200)
    dim: int
    embedding: Any = Field(sa_column=Column(Embedding(), nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class MemoryScope(SQLModel, table=True):
    """A tenant's namespace: the model its items are embedded with and a version of its content.

    The version rises with every change, so a process that caches vectors knows when to reload.
    """

    __tablename__ = "memory_scopes"
    scope: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=64)
    namespace: str = Field(max_length=200)
    model: str = Field(max_length=200)
    dim: int
    version: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


ITEMS = MemoryItem.__table__  # type: ignore[attr-defined]
SCOPES = MemoryScope.__table__  # type: ignore[attr-defined]
