"""`/v1/memory`: what a tenant's memory holds, and clearing one namespace of it.

Writes and searches are intents (`memory.write`, `memory.search`, `memory.delete`) run by the
memory pool; the API never loads the embedder.
"""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import StateDep, TenantDep
from api.openapi import BODY, KEYED, errors
from core.memory import store

router = APIRouter(prefix="/v1/memory", tags=["memory"])


class NamespaceStats(BaseModel):
    """One namespace: its items and the model that embedded them."""

    namespace: str
    items: int
    model: str
    dimension: int


class MemoryStats(BaseModel):
    """A tenant's memory: items, namespaces, and the embedder the memory pool uses."""

    items: int = Field(description="Items in every namespace.")
    namespaces: list[NamespaceStats]
    embedder: str = Field(description="The configured embedder, stored with each item it "
                          "embeds (e.g. `wordllama:l2_supercat:256`, `openai:<model>`).")
    dimension: int | None = Field(description="Its vectors' dimension, when known.")


class ClearRequest(BaseModel):
    """The namespace to clear."""

    namespace: str = Field(min_length=1, max_length=200, description="The namespace to empty.")


class Cleared(BaseModel):
    """What a clear removed."""

    namespace: str
    deleted: int


@router.get("/stats", operation_id="getMemoryStats", response_model=MemoryStats,
            summary="Memory statistics", responses=errors(*KEYED))
def memory_stats(state: StateDep, tenant: TenantDep) -> MemoryStats:
    """Items per namespace of the caller's memory, and the embedder in use.

    Counts only the calling tenant's items. `model` and `dimension` per namespace are those its
    items were embedded with; searching by meaning a namespace whose model differs from
    `embedder` fails with a clear error until `orchestrator memory reembed` migrates it.
    """
    settings = state.settings.embeddings
    with state.db.read() as session:
        namespaces = [NamespaceStats(**row) for row in store.stats(session=session,
                                                                    tenant_id=tenant)]
    known = {n.model: n.dimension for n in namespaces}
    dimension = known.get(settings.name, None if settings.base_url else settings.wordllama_dim)
    return MemoryStats(items=sum(n.items for n in namespaces), namespaces=namespaces,
                       embedder=settings.name, dimension=dimension)


@router.post("/clear", operation_id="clearMemory", response_model=Cleared,
             summary="Clear a namespace", responses=errors(*KEYED, *BODY, 404))
def clear_memory(body: ClearRequest, state: StateDep, tenant: TenantDep) -> Cleared:
    """Delete every item of one of the caller's namespaces.

    Only the calling tenant's namespace is touched; a namespace it does not have is a 404.
    """
    with state.db.write() as session:
        deleted = store.clear_namespace(session=session, tenant_id=tenant,
                                        namespace=body.namespace)
    return Cleared(namespace=body.namespace, deleted=deleted)
