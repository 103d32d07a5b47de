"""HTTP tools and `http.request` against real loopback servers, through the SSRF guard."""

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis

from adapters.breakers import Breakers
from core.settings import BreakerSettings
from tests.integration.conftest import LOST_AFTER, Stack, wait_job
from tests.integration.receiver import reply, serve

SCHEMA = {"type": "object", "properties": {"item_id": {"type": "string"},
                                           "qty": {"type": "integer", "minimum": 1}},
          "required": ["item_id", "qty"], "additionalProperties": False}


def tool(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": f"inventory.add-{uuid.uuid4().hex[:6]}", "method": "POST",
            "url": f"{url}/items/{{item_id}}", "headers": {"x-api-key": "s3cret"},
            "input_schema": SCHEMA, "description": "Add to an item's stock.", **extra}


def run(client: httpx.Client, intent: str, inputs: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"intent": intent, "inputs": inputs},
                           headers={"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.text
    return wait_job(client, response.json()["job_id"])


def test_a_registered_tool_is_called_through_a_job(client: httpx.Client) -> None:
    body = json.dumps({"stock": 7}).encode()
    with serve(reply(200, {"content-type": "application/json"}, body)) as server:
        # Given a tool registered on an allow-listed loopback server
        spec = tool(server.url)
        registered = client.post("/v1/tools/register", json=spec)
        assert registered.status_code == 201, registered.text
        intent = registered.json()["intent"]
        assert intent == f"tool.{spec['name']}" and registered.json()["headers"] == ["x-api-key"]
        # When a job uses it at once
        job = run(client, intent, {"item_id": "a b/c", "qty": 2})
        # Then the inputs filled the URL and the body, with the tool's headers
        assert job["status"] == "succeeded", job["error"]
        assert job["result"]["status"] == 200 and job["result"]["body"] == {"stock": 7}
        seen = server.received[0]
        assert seen.path == "/items/a%20b%2Fc" and json.loads(seen.body) == {"qty": 2}
        assert seen.headers["x-api-key"] == "s3cret"


def test_inputs_are_checked_by_the_tools_schema(client: httpx.Client) -> None:
    with serve(reply(200)) as server:
        intent = client.post("/v1/tools/register", json=tool(server.url)).json()["intent"]
        response = client.post("/v1/jobs", json={"intent": intent, "inputs": {
            "item_id": "a", "qty": 0}})
        assert response.status_code == 422 and response.json()["field"] == "inputs.qty"


def test_tools_are_listed_for_their_tenant_only_and_can_be_deleted(
        stack: Stack, client: httpx.Client) -> None:
    spec = tool("http://127.0.0.1:9")
    client.post("/v1/tools/register", json=spec).raise_for_status()
    for path in ("/v1/tools", "/v1/tools/list"):
        listed = {t["name"]: t for t in client.get(path).json()}
        assert listed[spec["name"]]["input_schema"] == SCHEMA
        assert listed[spec["name"]]["headers"] == ["x-api-key"]
        assert {"http.request", "ssh.exec", "ssh.exec.peek"} <= set(listed)
    with stack.client() as stranger:
        assert spec["name"] not in {t["name"] for t in stranger.get("/v1/tools").json()}
        assert stranger.post("/v1/jobs", json={"intent": f"tool.{spec['name']}", "inputs": {
            "item_id": "a", "qty": 1}}).status_code == 404
        assert stranger.delete(f"/v1/tools/{spec['name']}").status_code == 404
    assert client.delete(f"/v1/tools/{spec['name']}").status_code == 204
    assert client.post("/v1/jobs", json={"intent": f"tool.{spec['name']}", "inputs": {
        "item_id": "a", "qty": 1}}).status_code == 404


def test_a_tool_at_a_private_address_is_refused(client: httpx.Client) -> None:
    # 127.0.0.2 is loopback but outside the stack's allow-list (127.0.0.1/32)
    refused = client.post("/v1/tools/register", json=tool("http://127.0.0.2:8080"))
    assert refused.status_code == 422, refused.text
    assert "127.0.0.2 is a loopback address" in refused.json()["error"]
    templated = client.post("/v1/tools/register", json=tool("http://{host}:8080"))
    assert templated.status_code == 422 and "not the host" in templated.json()["error"]


def test_http_request_goes_through_the_guard_and_caps_the_answer(client: httpx.Client) -> None:
    with serve(reply(200, {"content-type": "text/plain"}, b"x" * (2 * 1024 * 1024))) as server:
        job = run(client, "http.request", {"url": f"{server.url}/big"})
        assert job["status"] == "succeeded", job["error"]
        assert job["result"]["truncated"] and len(job["result"]["body"]) == 1024 * 1024
    refused = run(client, "http.request", {"url": "http://127.0.0.2:1/", "method": "POST",
                                           "body": {"a": 1}})
    assert refused["status"] == "failed"
    assert "refused: 127.0.0.2 is a loopback address" in refused["error"]


def test_a_schema_referring_outside_itself_is_refused_and_nothing_is_fetched(
        client: httpx.Client, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"enum": ["FILE-SECRET-ON-API-HOST"]}')
    before = secret.stat().st_atime_ns
    with serve(reply(200, {"content-type": "application/json"},
                     b'{"enum": ["INTERNAL-SECRET"]}')) as server:
        for ref in (f"{server.url}/x.json", secret.as_uri()):
            # When a tool's schema refers to a loopback server or a file on the API's host
            schema = {"type": "object", "properties": {"guess": {"$ref": ref}}}
            response = client.post("/v1/tools/register", json=tool(server.url,
                                                                    input_schema=schema))
            # Then registration is refused naming the reference, and nothing was read
            assert response.status_code == 422, response.text
            assert f"'{ref}' points outside the schema" in response.json()["error"]
            assert "SECRET" not in response.text.replace(ref, "")
        assert server.received == []
    assert secret.stat().st_atime_ns == before


def test_a_pathological_pattern_does_not_stall_the_api(client: httpx.Client) -> None:
    # Given a tool whose schema has a pattern that backtracks exponentially in Python's `re`
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$",
                                                     "maxLength": 100}}}
    registered = client.post("/v1/tools/register", json=tool("http://127.0.0.1:9",
                                                             input_schema=schema))
    assert registered.status_code == 201, registered.text
    intent = registered.json()["intent"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        # When inputs made to defeat it are submitted, several at once
        submits = [pool.submit(client.post, "/v1/jobs", json={
            "intent": intent, "inputs": {"a": "a" * 40 + "!"}}) for _ in range(3)]
        # Then the API keeps answering /health at once meanwhile, and each submit is a 422
        started = time.monotonic()
        health = [client.get("/health").status_code for _ in range(5)]
        assert health == [200] * 5 and time.monotonic() - started < 2
        for submit in submits:
            response = submit.result(timeout=10)
            assert response.status_code == 422 and response.json()["field"] == "inputs.a"


def test_a_pattern_re2_cannot_run_is_refused_at_registration(client: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)"}}}
    response = client.post("/v1/tools/register", json=tool("http://127.0.0.1:9",
                                                           input_schema=schema))
    assert response.status_code == 422 and "the pattern '(?=x)' cannot be used" in \
        response.json()["error"]


def test_one_tenants_open_breaker_never_stops_another_tenants_calls(
        stack: Stack, client: httpx.Client) -> None:
    breakers = Breakers(redis.Redis.from_url(stack.env["REDIS_URL"]), BreakerSettings())
    with serve(reply(200)) as server, stack.client() as other:
        # Given another tenant whose calls to a host and port opened its breaker
        assert run(other, "http.request", {"url": f"{server.url}/b", "method": "POST"}
                   )["status"] == "succeeded"
        theirs = [b["name"] for b in other.get("/v1/breakers").json()
                  if b["name"].startswith("http:")]
        assert len(theirs) == 1 and theirs[0].endswith(f":127.0.0.1:{server.port}"), theirs
        breakers.breaker(theirs[0]).open()
        try:
            # When this tenant calls the same host and port
            job = run(client, "http.request", {"url": f"{server.url}/a", "method": "POST"})
            # Then its call goes through its own breaker, and it cannot see or reset theirs
            assert job["status"] == "succeeded" and job["result"]["status"] == 200, job
            assert [s["status"] for s in job["steps"]] == ["succeeded"]
            mine = [b["name"] for b in client.get("/v1/breakers").json()]
            assert theirs[0] not in mine
            assert client.post(f"/v1/breakers/{theirs[0]}/reset").status_code == 404
        finally:
            breakers.reset(theirs[0])


def test_an_answer_holding_nan_ends_the_step_with_null_in_its_place_once(
        client: httpx.Client) -> None:
    # Given an upstream that answers numbers JSON cannot hold (Python's json reads them)
    body = b'{"x": NaN, "y": [1.5, Infinity], "z": {"w": -Infinity}, "ok": 2}'
    with serve(reply(200, {"content-type": "application/json"}, body)) as server:
        # When a job posts to it
        job = run(client, "http.request", {"url": f"{server.url}/nan", "method": "POST",
                                           "body": {"a": 1}})
        time.sleep(LOST_AFTER + 2)  # past when the sweeper would send a step left running
        calls = len(server.received)
    # Then the job succeeded with null in their place, the upstream called once
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["body"] == {"x": None, "y": [1.5, None], "z": {"w": None}, "ok": 2}
    assert calls == 1 and job["steps"][0]["attempts"] == 1
    # And an event says which values were replaced
    events = client.get(f"/v1/jobs/{job['job_id']}/events").json()
    replaced = [e["data"] for e in events if e["type"] == "step_output_replaced"]
    assert replaced == [{"index": 0, "paths": ["$.body.x", "$.body.y[1]", "$.body.z.w"],
                         "value": None, "reason": "NaN and Infinity are not JSON"}]


def test_an_answer_holding_nul_and_a_lone_surrogate_is_stored_with_them_replaced(
        client: httpx.Client) -> None:
    # Given an upstream whose JSON holds text Postgres cannot store (NUL) and no UTF-8 can
    body = b'{"out": "a\\u0000b", "k\\u0000": "v", "s": "\\ud800", "ok": "fine"}'
    with serve(reply(200, {"content-type": "application/json"}, body)) as server:
        # When a job posts to it
        job = run(client, "http.request", {"url": f"{server.url}/nul", "method": "POST",
                                           "body": {"a": 1}})
    # Then the job succeeded, each such character now U+FFFD, the rest as it came
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["body"] == {"out": "a\ufffdb", "k\ufffd": "v", "s": "\ufffd",
                                      "ok": "fine"}
    assert job["steps"][0]["attempts"] == 1
    # And an event names the paths replaced
    events = client.get(f"/v1/jobs/{job['job_id']}/events").json()
    replaced = [e["data"] for e in events if e["type"] == "step_output_replaced"]
    assert replaced == [{"index": 0, "paths": ["$.body.out", "$.body.k\ufffd", "$.body.s"],
                         "value": "\ufffd",
                         "reason": "NUL and lone surrogates cannot be stored as text"}]
