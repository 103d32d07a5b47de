"""Memory intents: write, search and delete items of a tenant's namespaces (the `memory` pool).

The embedder and the index are the process's resources (`Resources.memory`), built on a memory
worker's first memory step: no other pool and not the API ever loads the embedder.
"""

from typing import Any

from pydantic import BaseModel, Field, model_validator

from core.memory import search, store
from core.memory.search import Mode, Query
from core.memory.store import Entry
from tasks.engine.context import StepContext

NAMESPACE: Any = Field("default", min_length=1, max_length=200, description="The namespace "
                  "(a tenant's separate memory); items of one namespace never mix with another.")
TAGS: Any = Field(default_factory=list, max_length=50, description="Labels to filter by.")


class MemoryEntry(BaseModel):
    """One text to remember."""

    text: str = Field(min_length=1, max_length=100_000, description="The text to remember.")
    tags: list[str] = TAGS
    metadata: dict[str, Any] = Field(default_factory=dict, description="Kept with the item.")


class WriteInputs(BaseModel):
    """Remember `text` (or several `items` at once) in a namespace; the same text is the same
    item, so writing it again stores nothing new (its tags and metadata are replaced)."""

    text: str | None = Field(None, min_length=1, max_length=100_000,
                             description="The text to remember.")
    tags: list[str] = TAGS
    metadata: dict[str, Any] = Field(default_factory=dict, description="Kept with the item.")
    items: list[MemoryEntry] = Field(default_factory=list, max_length=1000, description=(
        "Several texts to remember in one step (embedded in batches), instead of `text`."))
    namespace: str = NAMESPACE

    @model_validator(mode="after")
    def _one_way(self) -> "WriteInputs":
        if (self.text is None) == (not self.items):
            raise ValueError("give either `text` or `items`")
        return self

    def entries(self) -> list[Entry]:
        if self.text is not None:
            return [Entry(self.text, self.tags, self.metadata)]
        return [Entry(item.text, item.tags, item.metadata) for item in self.items]


class SearchInputs(BaseModel):
    """Find items of a namespace by meaning, by keyword, or both (hybrid)."""

    query: str = Field(min_length=1, max_length=10_000, description="What to look for.")
    namespace: str = NAMESPACE
    tags: list[str] = Field(default_factory=list, max_length=50,
                            description="Only items carrying every one of these tags.")
    k: int = Field(5, ge=1, le=100, description="How many results.")
    mode: Mode = Field(Mode.hybrid, description="hybrid (both, fused by reciprocal rank), "
                       "semantic (embedding similarity) or keyword (full text).")


class DeleteInputs(BaseModel):
    """Forget items by id."""

    item_ids: list[str] = Field(min_length=1, max_length=1000, description="Items to delete.")


def write(step: StepContext) -> dict[str, Any]:
    """Embed the new texts (in batches) and store them; reference 001's `{item_id, status}`."""
    assert isinstance(step.inputs, WriteInputs)
    inputs = step.inputs
    stored = [{"item_id": item_id, "status": "stored", "created": created}
              for item_id, created in search.remember(step.resources.memory, step.tenant_id,
                                                      inputs.namespace, inputs.entries())]
    if inputs.text is not None:
        return {**stored[0], "namespace": inputs.namespace}
    return {"items": stored, "namespace": inputs.namespace,
            "created": sum(1 for s in stored if s["created"])}


def find(step: StepContext) -> dict[str, Any]:
    """Search a namespace; `{"results": [...]}` suits a later step's `$ref`."""
    assert isinstance(step.inputs, SearchInputs)
    inputs = step.inputs
    query = Query(tenant_id=step.tenant_id, namespace=inputs.namespace, text=inputs.query,
                  k=inputs.k, mode=inputs.mode, tags=inputs.tags)
    return {"results": search.find(step.resources.memory, query), "mode": inputs.mode.value,
            "namespace": inputs.namespace}


def forget(step: StepContext) -> dict[str, Any]:
    """Delete the tenant's items among `item_ids`."""
    assert isinstance(step.inputs, DeleteInputs)
    with step.resources.db.write() as session:
        deleted = store.delete_items(session=session, tenant_id=step.tenant_id,
                                     ids=step.inputs.item_ids)
    return {"deleted": len(deleted), "item_ids": deleted}
