"""Memory with real memory workers (prefork), WordLlama, SQLite and Postgres + pgvector."""

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import services
from tests.corpus import CORPUS, PARAPHRASE, TARGET, TICKET
from tests.integration.conftest import Stack, wait_job
from tests.integration.receiver import Server, reply, serve


def run(client: httpx.Client, intent: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Submit one intent (never the same job as an earlier request) and wait for it to end."""
    answer = client.post("/v1/jobs", json={"intent": intent, "inputs": inputs},
                         headers={"Idempotency-Key": uuid.uuid4().hex})
    assert answer.status_code == 202, answer.text
    return wait_job(client, answer.json()["job_id"])


def result(client: httpx.Client, intent: str, inputs: dict[str, Any]) -> Any:
    job = run(client, intent, inputs)
    assert job["status"] == "succeeded", job["error"]
    return job["result"]


def write_corpus(client: httpx.Client, namespace: str = "default") -> None:
    written = result(client, "memory.write", {"namespace": namespace,
                                              "items": [{"text": t} for t in CORPUS]})
    assert written["created"] == len(CORPUS)


def search(client: httpx.Client, query: str, **inputs: Any) -> list[dict[str, Any]]:
    return list(result(client, "memory.search", {"query": query, **inputs})["results"])


def test_a_paraphrase_and_a_rare_token_find_their_items_first(client: httpx.Client) -> None:
    # Given a namespace with a target, a ticket and distractors
    write_corpus(client)
    # When searching by a paraphrase sharing no keyword, and by the ticket's id
    for mode in ("hybrid", "semantic"):
        found = search(client, PARAPHRASE, mode=mode, k=3)
        # Then the paraphrased item comes first, with its per-signal scores
        assert found[0]["text"] == TARGET, (mode, found)
        assert found[0]["scores"]["semantic"] > 0.2
    for mode in ("hybrid", "keyword"):
        found = search(client, "ZX-48213", mode=mode, k=3)
        assert found[0]["text"] == TICKET and found[0]["ranks"]["keyword"] == 1, (mode, found)
        assert set(found[0]) >= {"item_id", "text", "tags", "score", "scores"}


def test_writing_the_same_text_again_is_the_same_item(client: httpx.Client) -> None:
    # Given an item written once (reference 001's answer)
    first = result(client, "memory.write", {"text": TARGET, "tags": ["a"]})
    assert first["status"] == "stored" and first["item_id"].startswith("mem_")
    # When the same text is written again with other tags
    again = result(client, "memory.write", {"text": TARGET, "tags": ["b"]})
    # Then it is the same item, now tagged b, and the namespace holds one item
    assert (again["item_id"], again["created"]) == (first["item_id"], False)
    assert search(client, TARGET, tags=["b"])[0]["item_id"] == first["item_id"]
    assert search(client, TARGET, tags=["a"]) == []
    stats = client.get("/v1/memory/stats").json()
    assert stats["items"] == 1
    assert stats["namespaces"] == [{"namespace": "default", "items": 1,
                                    "model": "wordllama:l2_supercat:256", "dimension": 256}]
    assert (stats["embedder"], stats["dimension"]) == ("wordllama:l2_supercat:256", 256)


def test_namespaces_and_tenants_are_isolated(stack: Stack, client: httpx.Client) -> None:
    # Given a tenant's items in namespace "work"
    write_corpus(client, "work")
    # When another namespace of it, or another tenant, searches
    with stack.client() as other:
        for mode in ("hybrid", "semantic", "keyword"):
            assert search(client, "ZX-48213", namespace="home", mode=mode) == []
            assert search(other, "ZX-48213", namespace="work", mode=mode) == []
        # Then nothing is found; the other tenant can neither see nor clear or delete it
        assert other.get("/v1/memory/stats").json()["items"] == 0
        assert other.post("/v1/memory/clear", json={"namespace": "work"}).status_code == 404
        item_id = search(client, "ZX-48213", namespace="work")[0]["item_id"]
        assert result(other, "memory.delete", {"item_ids": [item_id]})["deleted"] == 0
    assert search(client, "ZX-48213", namespace="work")[0]["item_id"] == item_id


def test_delete_and_clear(client: httpx.Client) -> None:
    write_corpus(client, "tmp")
    item_id = search(client, "ZX-48213", namespace="tmp")[0]["item_id"]
    assert result(client, "memory.delete", {"item_ids": [item_id]}) == {
        "deleted": 1, "item_ids": [item_id]}
    assert all(r["item_id"] != item_id for r in search(client, "ZX-48213", namespace="tmp"))
    cleared = client.post("/v1/memory/clear", json={"namespace": "tmp"})
    assert cleared.json() == {"namespace": "tmp", "deleted": len(CORPUS) - 1}
    assert client.get("/v1/memory/stats").json()["items"] == 0


def test_search_results_feed_a_later_step(client: httpx.Client) -> None:
    # Given a plan that searches, then hands the results to the next step by reference
    write_corpus(client)
    steps = [{"intent": "memory.search", "inputs": {"query": "ZX-48213", "k": 2}},
             {"intent": "debug.echo", "inputs": {"grounding": {"$ref": "steps.1.output.results"},
                                                 "best": {"$ref":
                                                          "steps.1.output.results.0.text"}}}]
    job = run(client, "debug.plan", {"steps": steps})
    # Then the last step got the search results
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["best"] == TICKET and len(job["result"]["grounding"]) == 2


def test_invalid_inputs_are_refused_at_submit(client: httpx.Client) -> None:
    answer = client.post("/v1/jobs", json={"intent": "memory.search",
                                           "inputs": {"query": "x", "mode": "fuzzy"}})
    assert answer.status_code == 422 and "inputs.mode" in answer.json()["error"]
    answer = client.post("/v1/jobs", json={"intent": "memory.write", "inputs": {}})
    assert answer.status_code == 422 and "either `text` or `items`" in answer.json()["error"]


# --- an OpenAI-compatible embeddings server that answers 500 --------------------------------

def _failing(handler: Any) -> None:
    body = json.dumps({"error": {"message": "model crashed", "type": "server_error"}})
    reply(500, {"content-type": "application/json"}, body.encode())(handler)


@pytest.fixture
def broken_embeddings() -> Iterator[Server]:
    with serve(_failing) as server:
        yield server


@pytest.fixture
def remote_stack(stack: Stack, broken_embeddings: Server) -> Iterator[Stack]:
    """An API and a memory worker on their own broker database, embedding through the server."""
    port = services.free_port()
    own = 5 if stack.db.is_sqlite else 6  # a breaker's state is per broker database
    env = {**stack.env, "REDIS_URL": stack.env["REDIS_URL"].rsplit("/", 1)[0] + f"/{own}",
           "API_PORT": str(port), "API_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "EMBEDDINGS_BASE_URL": f"{broken_embeddings.url}/v1", "EMBEDDINGS_MODEL": "test-embed",
           "BREAKER_FAIL_MAX": "1", "BREAKER_RESET_TIMEOUT": "60", "RETRY_ATTEMPTS": "2",
           "RETRY_INITIAL": "0.01", "RETRY_JITTER": "0", "ORCHESTRATOR_UPSTREAM_RETRIES": "0"}
    remote = Stack(url=f"http://127.0.0.1:{port}", env=env, db=stack.db, logs=stack.logs)
    try:
        remote.start_worker("remote-memory", ["memory"], concurrency=1)
        remote.api = services.start_api(env, stack.logs / "remote-api.log")
        services.wait_http(f"{remote.url}/health")
        yield remote
    finally:
        for process in [*remote.workers.values(), remote.api]:
            if process is not None:
                process.stop()


def test_a_failing_embeddings_server_opens_its_breaker_and_fails_the_step_clearly(
        remote_stack: Stack, broken_embeddings: Server) -> None:
    with remote_stack.client() as client:
        # Given an embeddings server that answers 500
        # When a write needs an embedding
        first = run(client, "memory.write", {"text": "anything"})
        # Then it was tried (retried once), the step failed naming the upstream and the status
        assert first["status"] == "failed"
        assert "upstream embeddings: HTTP 500" in first["error"], first["error"]
        assert "model crashed" in first["error"]
        assert [r.path for r in broken_embeddings.received] == ["/v1/embeddings"] * 2
        # And the breaker is open: the next write fails fast without calling the server
        breaker = {b["name"]: b for b in client.get("/v1/breakers").json()}["embeddings"]
        assert breaker["state"] == "open"
        second = run(client, "memory.write", {"text": "something else"})
        assert second["status"] == "failed"
        assert "upstream embeddings unavailable" in second["error"], second["error"]
        assert len(broken_embeddings.received) == 2


def submit(client: httpx.Client, intent: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Submit without an `Idempotency-Key` (the default key applies)."""
    answer = client.post("/v1/jobs", json={"intent": intent, "inputs": inputs})
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def test_a_repeated_search_runs_again_and_a_repeated_write_is_deduplicated(
        client: httpx.Client) -> None:
    namespace = f"effects-{uuid.uuid4().hex[:8]}"
    query = {"namespace": namespace, "query": "a hot drink", "k": 10}
    # Given a namespace with one item, searched once
    tea = submit(client, "memory.write", {"namespace": namespace, "text": "green tea"})
    assert wait_job(client, tea["job_id"])["status"] == "succeeded"
    first = submit(client, "memory.search", query)
    assert len(wait_job(client, first["job_id"])["result"]["results"]) == 1
    # When a new item is written and the same search is sent again
    coffee = submit(client, "memory.write", {"namespace": namespace, "text": "black coffee"})
    assert wait_job(client, coffee["job_id"])["status"] == "succeeded"
    again = submit(client, "memory.search", query)
    # Then the search (a read) ran again and sees the new item
    assert again["job_id"] != first["job_id"] and again["deduplicated"] is False
    assert len(wait_job(client, again["job_id"])["result"]["results"]) == 2
    # And the same write sent again (a write) answers the earlier job, saying so
    repeat = submit(client, "memory.write", {"namespace": namespace, "text": "black coffee"})
    assert repeat["job_id"] == coffee["job_id"] and repeat["deduplicated"] is True
    assert repeat["original_job_id"] == coffee["job_id"] and repeat["age_seconds"] >= 0
    # And a search the caller keys is deduplicated by that key
    keyed = {"Idempotency-Key": uuid.uuid4().hex}
    once = client.post("/v1/jobs", json={"intent": "memory.search", "inputs": query},
                       headers=keyed).json()
    twice = client.post("/v1/jobs", json={"intent": "memory.search", "inputs": query},
                        headers=keyed).json()
    assert twice["job_id"] == once["job_id"] and twice["deduplicated"] is True
