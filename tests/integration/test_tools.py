"""HTTP tools and `http.request` against real loopback servers, through the SSRF guard."""

import json
import time
import uuid
from typing import Any

import httpx

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
