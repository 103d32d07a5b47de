"""`/mcp` answers every malformed JSON-RPC message with a JSON-RPC error, never a 5xx."""

import json

import httpx
import pytest

from tests.integration.conftest import Stack

PARSE, INVALID_REQUEST, NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def rpc(method: object = "tools/list", params: object = None, **envelope: object) -> str:
    message: dict[str, object] = {"jsonrpc": "2.0", "id": 1, "method": method, **envelope}
    if params is not None:
        message["params"] = params
    return json.dumps(message)


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def call(arguments: str) -> str:
    return ('{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": '
            f'{{"name": "debug.echo", "arguments": {arguments}}}}}')


CASES = [
    # bodies that are not JSON, or not one JSON-RPC object
    ("not-json", "hello", PARSE),
    ("empty", "", PARSE),
    ("5000-deep-array", "[" * 5000 + "]" * 5000, PARSE),
    ("batch", f"[{rpc()}]", INVALID_REQUEST),
    ("empty-batch", "[]", INVALID_REQUEST),
    ("number", "1", INVALID_REQUEST),
    ("string", '"tools/list"', INVALID_REQUEST),
    ("null", "null", INVALID_REQUEST),
    # the envelope's fields of the wrong type
    ("jsonrpc-1.0", rpc(jsonrpc="1.0"), INVALID_REQUEST),
    ("no-jsonrpc", '{"id": 1, "method": "tools/list"}', INVALID_REQUEST),
    ("id-object", rpc(id={"a": 1}), INVALID_REQUEST),
    ("id-list", rpc(id=[1]), INVALID_REQUEST),
    ("id-bool", rpc(id=True), INVALID_REQUEST),
    ("id-float", rpc(id=1.5), INVALID_REQUEST),
    ("id-lone-surrogate", '{"jsonrpc": "2.0", "id": "\\ud800", "method": "tools/list"}',
     INVALID_REQUEST),
    ("method-number", rpc(method=5), INVALID_REQUEST),
    ("method-empty", rpc(method=""), INVALID_REQUEST),
    ("no-method", '{"jsonrpc": "2.0", "id": 1}', INVALID_REQUEST),
    ("params-string", rpc(params="x"), INVALID_REQUEST),
    ("params-number", rpc(params=3), INVALID_REQUEST),
    ("tasks-get-params-string", rpc("tasks/get", "job_1"), INVALID_REQUEST),
    # unknown methods
    ("unknown-method", rpc("nope/nothing"), NOT_FOUND),
    # params of the wrong shape or content
    ("params-list", rpc(params=[1, 2]), INVALID_PARAMS),
    ("tasks-get-params-list", rpc("tasks/get", ["job_1"]), INVALID_PARAMS),
    ("tasks-get-no-task-id", rpc("tasks/get", {}), INVALID_PARAMS),
    ("tasks-get-task-id-object", rpc("tasks/get", {"taskId": {"a": 1}}), INVALID_PARAMS),
    ("tasks-get-unknown-task", rpc("tasks/get", {"taskId": "job_nope"}), INVALID_PARAMS),
    ("tasks-result-no-task-id", rpc("tasks/result", {}), INVALID_PARAMS),
    ("tasks-cancel-unknown", rpc("tasks/cancel", {"taskId": "job_nope"}), INVALID_PARAMS),
    ("deep-params", rpc(params=json.loads(nested(40))), INVALID_PARAMS),
    ("call-no-name", rpc("tools/call", {"arguments": {}}), INVALID_PARAMS),
    ("call-name-number", rpc("tools/call", {"name": 5}), INVALID_PARAMS),
    ("call-arguments-list", rpc("tools/call", {"name": "debug.echo", "arguments": [1]}),
     INVALID_PARAMS),
    ("call-arguments-string", rpc("tools/call", {"name": "debug.echo", "arguments": "x"}),
     INVALID_PARAMS),
    ("call-arguments-300-deep", call(nested(300)), INVALID_PARAMS),
    ("call-arguments-nan", call('{"x": NaN}'), INVALID_PARAMS),
    ("call-arguments-1e999", call('{"x": 1e999}'), INVALID_PARAMS),
    ("call-arguments-nul", call('{"x": "a\\u0000"}'), INVALID_PARAMS),
    ("call-arguments-lone-surrogate", call('{"x": "\\udc00"}'), INVALID_PARAMS),
    ("task-call-300-deep", '{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": '
     f'{{"name": "debug.echo", "task": {{}}, "arguments": {nested(300)}}}}}', INVALID_PARAMS),
    ("task-call-task-string", rpc("tools/call", {"name": "debug.echo", "task": "x"}),
     INVALID_PARAMS),
    ("huge-params", rpc("tools/call", {"name": "debug.echo",
                                       "arguments": {"x": "y" * 1_100_000}}), INVALID_REQUEST),
]


@pytest.mark.parametrize(("body", "code"), [(b, c) for _, b, c in CASES],
                         ids=[name for name, _, _ in CASES])
def test_a_malformed_message_gets_a_json_rpc_error(stack: Stack, client: httpx.Client,
                                                   body: str, code: int) -> None:
    # Given a malformed JSON-RPC message
    # When it is posted to /mcp with a tenant's key
    response = client.post("/mcp", content=body.encode("utf-8", "surrogatepass"),
                           headers=HEADERS)
    # Then the answer is a JSON-RPC error with the code for what is wrong, never a 5xx
    assert response.status_code < 500, response.text[:300]
    reply = response.json()
    assert reply["jsonrpc"] == "2.0" and reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    # And nothing was stored that would keep the tenant's jobs from reading
    assert client.get("/v1/jobs").status_code == 200
