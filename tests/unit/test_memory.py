"""Memory on a real SQLite store with the real WordLlama embedder: writes, searches, fusion."""

from collections.abc import Iterator

import numpy as np
import pytest

from adapters.embeddings import WordLlamaEmbedder
from adapters.vectors import SqliteIndex, fts_terms, top
from core.db import Database
from core.errors import EmbedderMismatch, NotFound
from core.memory import store
from core.memory.reembed import reembed, stale_items
from core.memory.search import Memory, Mode, Query, find, fuse, remember
from core.memory.store import Entry
from core.store.tenants import create_tenant_key
from core.vault import Vault, new_key
from tests.corpus import CORPUS, PARAPHRASE, TARGET, TICKET


@pytest.fixture(scope="module")
def embedder() -> WordLlamaEmbedder:
    return WordLlamaEmbedder("l2_supercat", 256)


@pytest.fixture
def memory(db: Database, embedder: WordLlamaEmbedder) -> Iterator[Memory]:
    yield Memory(db, embedder, SqliteIndex(64 * 2**20), batch=4)


def write_corpus(memory: Memory, tenant: str, namespace: str = "default") -> list[str]:
    return [i for i, _ in remember(memory, tenant, namespace, [Entry(t) for t in CORPUS])]


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_a_paraphrase_sharing_no_keyword_finds_its_item_first(memory: Memory, tenant: str,
                                                            mode: Mode) -> None:
    # Given the corpus, in batches of four
    write_corpus(memory, tenant)
    # When searching by a paraphrase of one item
    results = find(memory, Query(tenant, "default", PARAPHRASE, k=3, mode=mode))
    # Then semantic and hybrid rank it first; keyword finds nothing (no word in common)
    if mode == Mode.keyword:
        assert results == []
        return
    assert results[0]["text"] == TARGET
    assert results[0]["scores"]["semantic"] > 0.2


@pytest.mark.parametrize("mode", [Mode.hybrid, Mode.keyword], ids=str)
def test_a_rare_token_finds_its_item_by_keyword(memory: Memory, tenant: str, mode: Mode) -> None:
    write_corpus(memory, tenant)
    results = find(memory, Query(tenant, "default", "ZX-48213", k=3, mode=mode))
    assert results[0]["text"] == TICKET
    assert results[0]["scores"]["keyword"] > 0
    assert results[0]["ranks"]["keyword"] == 1


def test_the_same_text_in_the_same_namespace_is_the_same_item(memory: Memory,
                                                               tenant: str) -> None:
    # Given an item written once
    [(first, created)] = remember(memory, tenant, "ns", [Entry(TARGET, ["a"])])
    # When it is written again with other tags, and in another namespace
    [(again, created_again)] = remember(memory, tenant, "ns", [Entry(TARGET, ["b"])])
    [(other, _)] = remember(memory, tenant, "other", [Entry(TARGET)])
    # Then the first two are one item, with the latest tags; the other namespace has its own
    assert (first, created, created_again) == (again, True, False)
    assert other != first
    with memory.db.read() as session:
        assert store.get_items(session=session, ids=[first])[first].tags == ["b"]
        assert store.count_items(session=session, scope=store.find_scope(
            session=session, tenant_id=tenant, namespace="ns").scope) == 1  # type: ignore[union-attr]


def test_tenants_and_namespaces_never_see_each_other(memory: Memory, tenant: str) -> None:
    with memory.db.write() as session:
        other, _ = create_tenant_key(session=session, vault=Vault([new_key()]), tenant_name="other")
    write_corpus(memory, tenant)
    for who, namespace in ((other.id, "default"), (tenant, "elsewhere")):
        for mode in Mode:
            assert find(memory, Query(who, namespace, "ZX-48213", mode=mode)) == []


def test_tags_filter_results(memory: Memory, tenant: str) -> None:
    remember(memory, tenant, "default", [Entry(TARGET, ["ops", "billing"]), Entry(TICKET, ["ops"])])
    for mode in Mode:
        found = find(memory, Query(tenant, "default", "billing deploy ZX-48213", mode=mode,
                                   tags=["billing"]))
        assert [r["text"] for r in found] == [TARGET], mode


def test_delete_and_clear(memory: Memory, tenant: str) -> None:
    ids = write_corpus(memory, tenant)
    with memory.db.write() as session:
        assert store.delete_items(session=session, tenant_id=tenant, ids=[ids[1], "mem_x"]) == [
            ids[1]]
    assert all(r["item_id"] != ids[1] for r in find(memory, Query(tenant, "default", "ZX-48213")))
    with memory.db.write() as session:
        assert store.clear_namespace(session=session, tenant_id=tenant,
                                     namespace="default") == len(ids) - 1
    with memory.db.write() as session, pytest.raises(NotFound):
        store.clear_namespace(session=session, tenant_id=tenant, namespace="default")


class OtherModel:
    """Another embedder's name, same vectors: enough to tell the stores apart."""

    name = "other:model"
    dim = 256

    def __init__(self, inner: WordLlamaEmbedder) -> None:
        self.inner = inner

    def embed(self, texts: list[str]) -> np.ndarray:  # type: ignore[type-arg]
        return self.inner.embed(texts)

    def close(self) -> None:
        return None


def test_a_store_embedded_by_another_model_is_a_clear_error(memory: Memory, tenant: str,
                                                             embedder: WordLlamaEmbedder) -> None:
    write_corpus(memory, tenant)
    other = Memory(memory.db, OtherModel(embedder), memory.index)
    with pytest.raises(EmbedderMismatch, match="embedded with wordllama:l2_supercat:256 .* "
                       "`orchestrator memory reembed`"):
        find(other, Query(tenant, "default", PARAPHRASE, mode=Mode.semantic))
    with pytest.raises(EmbedderMismatch):
        remember(other, tenant, "default", [Entry("new text")])
    # keyword search needs no embedding, so it still works
    assert find(other, Query(tenant, "default", "ZX-48213", mode=Mode.keyword))


def test_the_cache_sees_writes_of_other_processes(memory: Memory, tenant: str,
                                                   embedder: WordLlamaEmbedder) -> None:
    # Given a process that searched (and cached the namespace's vectors)
    remember(memory, tenant, "default", [Entry(t) for t in CORPUS[2:]])
    assert find(memory, Query(tenant, "default", PARAPHRASE, mode=Mode.semantic))[0]["text"] \
        != TARGET
    # When another process (its own index and cache) writes the target
    remember(Memory(memory.db, embedder, SqliteIndex(2**20)), tenant, "default", [Entry(TARGET)])
    # Then the first finds it
    assert find(memory, Query(tenant, "default", PARAPHRASE, mode=Mode.semantic))[0]["text"] \
        == TARGET


def test_fusion_adds_reciprocal_ranks() -> None:
    fused = fuse({"semantic": [("a", 0.9), ("b", 0.8)], "keyword": [("b", 5.0), ("c", 1.0)]},
                 rrf_k=60, limit=3)
    assert [r.item_id for r in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[0].ranks == {"semantic": 2, "keyword": 1}
    assert fused[1].scores == {"semantic": 0.9, "keyword": None}


@pytest.mark.parametrize(("query", "terms"), [
    ("ZX-48213", '"ZX-48213"'),
    ('what is "the" status of the login', '"status" OR "login"'),
    ("the of", '"the" OR "of"'),
    ("?? !!", ""),
], ids=["token", "stop-words", "only-stop-words", "no-words"])
def test_keyword_queries_are_quoted_words_joined_by_or(query: str, terms: str) -> None:
    assert fts_terms(query) == terms


def test_top_orders_the_best_first() -> None:
    assert top(np.array([0.1, 0.9, 0.5, 0.7], dtype=np.float32), 2) == [1, 3]
    assert top(np.array([0.1, 0.9], dtype=np.float32), 5) == [1, 0]


def test_reembed_moves_a_store_to_the_new_embedder(memory: Memory, tenant: str,
                                                   embedder: WordLlamaEmbedder) -> None:
    # Given a namespace embedded by another model
    old = Memory(memory.db, OtherModel(embedder), memory.index, batch=3)
    remember(old, tenant, "default", [Entry(t) for t in CORPUS])
    with pytest.raises(EmbedderMismatch):
        find(memory, Query(tenant, "default", PARAPHRASE))
    assert stale_items(memory) == len(CORPUS)
    # When it is re-embedded with the current embedder, three at a time
    advanced: list[int] = []
    assert reembed(Memory(memory.db, embedder, memory.index, batch=3), advanced.append) == len(
        CORPUS)
    # Then every item moved, the namespace is the new model's and searches find by meaning
    assert advanced == [3, 3, 3, 1] and stale_items(memory) == 0
    with memory.db.read() as session:
        assert store.stats(session=session, tenant_id=tenant)[0]["model"] == embedder.name
    assert find(memory, Query(tenant, "default", PARAPHRASE))[0]["text"] == TARGET
