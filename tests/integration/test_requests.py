"""Bad requests get a 4xx that says what to fix; the compatibility and operations routes."""

import base64
import json
import re
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.integration.conftest import Stack, wait_job


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"intent": "nope.never", "inputs": {}}, 404, "Intent 'nope.never' not found"),
        ({"intent": "debug.sleep", "inputs": {"seconds": "soon"}}, 422, "inputs.seconds"),
        ({"intent": "debug.sleep", "inputs": {"seconds": -1}}, 422, "inputs.seconds"),
        ({"intent": "debug.chain", "inputs": {"steps": 0}}, 422, "inputs.steps"),
        ({"intent": "debug.echo", "mode": "flow"}, 422, "runs in mode 'agent'"),
        ({"intent": "debug.echo", "mode": "turbo"}, 422, "mode"),
        ({"inputs": {}}, 422, "send either `intent` or `prompt`"),
        ({"intent": "debug.echo", "callback_url": "not a url"}, 422, "callback_url"),
        ({"intent": "debug.echo", "callback_url": "http://" + "a" * 1000 + ".com/"}, 422,
         "is not a valid host name"),
        ({"intent": "debug.echo", "callback_url": "https://example.com/" + "p" * 2048}, 422,
         "callback_url: URL should have at most 2048 characters"),
        ({"intent": "debug.echo", "surprise": 1}, 422, "surprise"),
    ],
    ids=["unknown-intent", "wrong-type", "below-minimum", "zero-steps", "wrong-mode",
         "unknown-mode", "missing-intent", "bad-callback", "invalid-callback-host",
         "long-callback-url", "unknown-field"],
)
def test_bad_submissions_say_what_to_fix(client: httpx.Client, body: dict, status: int,
                                         says: str) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]
    assert "Traceback" not in response.text


def test_unknown_intent_lists_the_available_ones(client: httpx.Client) -> None:
    # Given an intent that does not exist
    # When it is submitted
    body = client.post("/v1/jobs", json={"intent": "xyz"}).json()
    # Then `error` has the seed contract's text and `available` stays a list
    assert body["error"] == f"Intent 'xyz' not found. Available: {body['available']}"
    assert {"debug.echo", "debug.chain", "debug.sleep"} <= set(body["available"])


@pytest.mark.parametrize("wait", [0, 5], ids=["accepted", "finished"])
def test_a_job_id_is_job_id_in_every_answer(client: httpx.Client, wait: int) -> None:
    # Given a job submitted with and without waiting for its result
    response = client.post("/v1/jobs", json={"intent": "debug.echo", "wait": wait,
                                             "inputs": {"text": uuid.uuid4().hex}})
    # Then the 202 and the 200 both name it `job_id`, never `id`
    assert response.status_code == (200 if wait else 202)
    assert "job_id" in response.json() and "id" not in response.json()


def test_form_body_is_told_to_send_json(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", content=b"intent=debug.echo",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 422
    assert "Content-Type: application/json" in response.json()["error"]


def test_malformed_json_is_a_422(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", content=b'{"intent": ',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in response.json()["error"]


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_body_over_one_mib_is_413(client: httpx.Client, chunked: bool) -> None:
    payload = b'{"intent": "debug.echo", "inputs": {"x": "' + b"a" * (1024 * 1024) + b'"}}'
    content = iter([payload[i:i + 65536] for i in range(0, len(payload), 65536)]) \
        if chunked else payload
    response = client.post("/v1/jobs", content=content,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "over 1048576 bytes" in response.json()["error"]


def test_missing_or_wrong_key_is_401(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/v1/jobs").status_code == 401
    response = httpx.get(f"{stack.url}/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["error"] == "unknown or revoked API key"


def test_unknown_job_is_404(client: httpx.Client) -> None:
    response = client.get("/v1/jobs/job_doesnotexist")
    assert response.status_code == 404
    assert response.json()["error"] == "job job_doesnotexist not found"


def test_orchestrate_sync_answer(client: httpx.Client) -> None:
    response = client.post("/orchestrate", json={"intent": "debug.echo",
                                                 "inputs": {"text": uuid.uuid4().hex}})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["mode"] == "agent"
    assert isinstance(body["duration_ms"], int)
    assert body["result"]["text"]


def test_orchestrate_with_callback_is_accepted_and_pollable(client: httpx.Client) -> None:
    response = client.post("/orchestrate", json={
        "intent": "debug.sleep", "inputs": {"seconds": 0.2}, "mode": "agent",
        "callback_url": "https://example.com/webhook"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert body["message"] == "Job accepted for async processing"
    assert body["callback_url"] == "https://example.com/webhook"
    wait_job(client, body["job_id"])
    polled = client.get(f"/jobs/{body['job_id']}").json()
    assert polled["status"] == "succeeded" and polled["result"]["slept"] >= 0.2


def test_orchestrate_unknown_intent_contract(client: httpx.Client) -> None:
    response = client.post("/orchestrate", json={"intent": "xyz", "inputs": {}})
    assert response.status_code == 404
    assert response.json()["error"].startswith("Intent 'xyz' not found. Available: ['")


def test_ready_sees_every_pool(stack: Stack) -> None:
    body = httpx.get(f"{stack.url}/ready").json()
    assert body["status"] == "ready"
    assert set(body["checks"]["pools"]) == {"llm", "tools", "memory", "flow", "callbacks"}


@pytest.mark.parametrize(("who", "hosts"), [("nobody", False), ("stranger", False),
                                            ("tenant", False), ("operator", True)],
                         ids=["no-key", "wrong-key", "tenant-key", "operator-key"])
def test_ready_shows_worker_hosts_only_to_operators(stack: Stack, who: str,
                                                    hosts: bool) -> None:
    # Given each kind of caller
    keys = {"nobody": None, "stranger": "not-a-key", "tenant": stack.new_key(),
            "operator": stack.new_key(operator=True)}
    headers = {"Authorization": f"Bearer {keys[who]}"} if keys[who] else {}
    # When it asks whether the stack is ready
    response = httpx.get(f"{stack.url}/ready", headers=headers)
    # Then everyone gets the answer and each pool's count, only an operator the hosts and pids
    assert response.status_code == 200, response.text
    pools = response.json()["checks"]["pools"]
    assert all(pool["live"] >= 1 for pool in pools.values())
    assert ("@" in response.text) == hosts
    assert all(("workers" in pool) == hosts for pool in pools.values())


def test_metrics_and_intents(stack: Stack, client: httpx.Client) -> None:
    client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"m": 1}, "wait": True})
    metrics = stack.metrics_with('orchestrator_jobs_submitted_total{intent="debug.echo"}')
    assert 'orchestrator_jobs{status="succeeded"}' in metrics
    assert 'orchestrator_jobs_submitted_total{intent="debug.echo"}' in metrics
    assert 'orchestrator_live_workers{pool="tools"}' in metrics
    intents = {i["name"]: i for i in client.get("/v1/intents").json()}
    assert intents["debug.sleep"]["input_schema"]["properties"]["seconds"]["maximum"] == 3600


def test_openapi_names_every_operation(stack: Stack) -> None:
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert all(op.get("operationId") and op.get("summary") for op in operations)


def _nested(depth: int) -> str:
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize("route", ["/v1/jobs", "/orchestrate"])
@pytest.mark.parametrize(
    ("field", "value", "says"),
    [("context", _nested(300), "nested deeper than 32 levels"),
     ("inputs", _nested(300), "nested deeper than 32 levels"),
     ("inputs", '{"text": NaN}', "nan is not a JSON number"),
     ("context", '{"x": [Infinity]}', "inf is not a JSON number"),
     ("context", '{"x": -Infinity}', "-inf is not a JSON number")],
    ids=["deep-context", "deep-inputs", "nan", "infinity", "minus-infinity"])
def test_json_that_cannot_be_stored_is_refused(client: httpx.Client, route: str, field: str,
                                               value: str, says: str) -> None:
    # Given a submission whose JSON is too deep, or holds NaN or Infinity
    body = f'{{"intent": "debug.echo", "{field}": {value}}}'
    # When it is submitted
    response = client.post(route, content=body, headers={"Content-Type": "application/json"})
    # Then it is refused with the limit, and the tenant's jobs still read fine
    assert response.status_code == 422, response.text
    assert f"{field}: {says}" in response.json()["error"]
    assert client.get("/v1/jobs").status_code == 200


def test_json_at_the_depth_limit_is_stored(client: httpx.Client) -> None:
    # Given a context exactly 32 levels deep
    body = f'{{"intent": "debug.echo", "context": {_nested(32)}}}'
    # When it is submitted
    response = client.post("/v1/jobs", content=body,
                           headers={"Content-Type": "application/json"})
    # Then it is accepted and reads back
    assert response.status_code == 202, response.text
    assert client.get(f"/v1/jobs/{response.json()['job_id']}").status_code == 200


def test_a_body_too_deep_to_parse_is_a_400(client: httpx.Client) -> None:
    # Given a body nested deeper than any parser recursion allows
    body = '{"intent": "debug.echo", "context": ' + "[" * 100_000 + "]" * 100_000 + "}"
    # When it is submitted
    response = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    # Then it is a 400 that says so
    assert response.status_code == 400
    assert "parsing the body" in response.json()["error"]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("path", "headers", "says"),
    [("events?after=9223372036854775808", {}, "after"),
     ("events?after=2147483648", {}, "after"),
     ("events?after=-1", {}, "after"),
     ("events", {"Last-Event-ID": "99999999999999999999"}, "last-event-id"),
     ("events", {"Last-Event-ID": "99999999999999999999", "Accept": "text/event-stream"},
      "last-event-id")],
    ids=["after-past-bigint", "after-past-integer", "after-negative",
         "last-event-id-past-bigint", "sse-past-bigint"])
def test_event_positions_out_of_range_are_a_422(client: httpx.Client, path: str,
                                                headers: dict[str, str], says: str) -> None:
    # Given a job
    job_id = client.post("/v1/jobs", json={"intent": "debug.echo"}).json()["job_id"]
    # When its events are asked from a position no event can have
    response = client.get(f"/v1/jobs/{job_id}/{path}", headers=headers)
    # Then the answer is a 422 naming the parameter, before any stream starts
    assert response.status_code == 422, response.text
    assert says in response.json()["error"].lower()


@pytest.mark.parametrize(
    ("cursor", "status"),
    [(_b64("2024-01-01|x"), 422), (_b64("|"), 422), (_b64("not-a-date|job_1"), 422),
     ("%%%", 422), (base64.urlsafe_b64encode(b"\xff\xfe|x").decode(), 422),
     (_b64("2024-01-01T00:00:00+00:00|x" + "y" * 300), 200),
     (_b64("9999-12-31T23:59:59+14:00|job_1"), 200)],
    ids=["naive-date", "empty", "not-a-date", "not-base64", "not-utf8", "long-id", "far-future"])
def test_a_forged_cursor_is_a_422(client: httpx.Client, cursor: str, status: int) -> None:
    # Given a cursor that no page handed out
    # When it is used to list jobs
    response = client.get("/v1/jobs", params={"cursor": cursor})
    # Then the answer is a 422 about the cursor, or (well-formed) an empty page
    assert response.status_code == status, response.text
    if status == 422:
        assert "cursor" in response.json()["error"]


def test_the_api_says_where_it_is_at_start(stack: Stack) -> None:
    # Given the API process of the stack, started and ready
    log = (stack.logs / "api.log").read_text()
    # Then its log has one line with its URL, the job store, the broker and the docs
    lines = [line for line in log.splitlines() if "Orchestrator API at" in line]
    assert len(lines) == 1, log
    assert f"Orchestrator API at {stack.url} (docs {stack.url}/docs)" in lines[0]
    assert f"job store {stack.env['DATABASE_URL']};" in lines[0]
    assert f"broker {stack.env['REDIS_URL']}" in lines[0]



@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_need_no_internet(stack: Stack, page: str) -> None:
    # Given the docs page
    html = httpx.get(stack.url + page).text
    # When every script and stylesheet it loads is fetched
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    # Then each comes from the API itself and is served
    assert assets and all(asset.startswith("/") for asset in assets), assets
    for asset in assets:
        response = httpx.get(stack.url + asset)
        assert response.status_code == 200 and len(response.content) > 1000, asset


def test_the_highest_event_position_reads_an_empty_page(client: httpx.Client) -> None:
    # Given a job, and the highest position the store can hold
    job_id = client.post("/v1/jobs", json={"intent": "debug.echo"}).json()["job_id"]
    # When its events after that position are read, by query and by header
    by_query = client.get(f"/v1/jobs/{job_id}/events", params={"after": 2**31 - 1})
    by_header = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "2147483647"})
    # Then both are empty pages, not errors
    assert (by_query.status_code, by_query.json()) == (200, [])
    assert (by_header.status_code, by_header.json()) == (200, [])


def chat_socket(stack: Stack) -> ClientConnection:
    url = stack.url.replace("http://", "ws://") + "/v1/chat/ws"
    return connect(url, additional_headers={"Authorization": f"Bearer {stack.new_key()}"})


@pytest.mark.parametrize(("message", "says"), [
    ("[" * 5000 + "]" * 5000, "nested deeper than 32 levels"),
    ('{"message": ' + "[" * 40 + "]" * 40 + "}", "nested deeper than 32 levels"),
    ("hello, not JSON", "invalid message"),
    (b"\xff\xfe not UTF-8", "invalid message"),
    ('{"message": NaN}', "not a JSON number"),
    ('{"message": ""}', "invalid message"),
], ids=["5000-deep", "too-deep", "not-json", "binary", "nan", "empty-message"])
def test_a_bad_chat_socket_message_gets_an_error_and_the_socket_goes_on(
        stack: Stack, message: str | bytes, says: str) -> None:
    # Given a chat socket (malformed, too deep or not JSON at all: the rule of every JSON body)
    with chat_socket(stack) as socket:
        # When a malformed message is sent
        socket.send(message)
        # Then it gets an error frame that says what is wrong
        error = json.loads(socket.recv(timeout=10))
        assert error["type"] == "error" and says in error["error"], error
        assert "Traceback" not in error["error"]
        # and the socket still takes a good message
        socket.send(json.dumps({"message": "hello"}))
        assert json.loads(socket.recv(timeout=10))["type"] == "accepted"


def test_a_chat_socket_message_over_the_body_limit_is_closed_with_1009(stack: Stack) -> None:
    with chat_socket(stack) as socket:
        # When a message larger than API_MAX_BODY_BYTES (1 MiB) is sent
        socket.send(json.dumps({"message": "x" * (2 * 1024 * 1024)}))
        # Then the socket is closed with a close frame saying so
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert closed.value.rcvd.reason, "the close frame says why"


NUL_PATHS = ["/v1/jobs/a%00b", "/v1/jobs/a%00b/events", "/v1/sessions/s%00/messages",
             "/v1/deliveries/d%00", "/jobs/a%00b",
             "/v1/jobs?intent=a%00b", "/v1/jobs?status=queued&cursor=%00"]


@pytest.mark.parametrize("path", NUL_PATHS)
def test_a_nul_in_a_path_or_query_is_a_422_that_says_so(client: httpx.Client,
                                                         path: str) -> None:
    # Postgres text cannot hold NUL: a lookup with one must not reach the store as a 500
    response = client.get(path)
    assert response.status_code == 422, response.text
    assert response.json() == {"error": "the URL holds a NUL character (%00); remove it",
                               "field": "url"}


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/jobs/a%00b/cancel"), ("DELETE", "/v1/tools/t%00"),
    ("POST", "/v1/resume/r%00"), ("POST", "/v1/deliveries/d%00/redeliver")])
def test_a_nul_in_the_path_of_a_change_is_a_422(client: httpx.Client, method: str,
                                               path: str) -> None:
    response = client.request(method, path, json={})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("after", [2**31, 2**63, -1])
def test_session_message_positions_out_of_range_are_a_422(client: httpx.Client,
                                                          after: int) -> None:
    # chat_messages.id is an INTEGER on Postgres: a position past it is the caller's mistake
    response = client.get("/v1/sessions/ses_none/messages", params={"after": after})
    assert response.status_code == 422, response.text
    assert "after" in response.json()["error"]
