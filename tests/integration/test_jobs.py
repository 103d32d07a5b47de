"""The job lifecycle through the real API, broker, job store and worker processes."""

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import redis

from core.events import CHANNEL
from tasks.debug import SLEPT_KEY
from tests.integration.conftest import Stack, wait_job


def unique() -> str:
    return uuid.uuid4().hex


def test_echo_with_wait_answers_200_with_the_result(client: httpx.Client) -> None:
    # Given an echo job whose inputs are unique
    inputs = {"hello": unique(), "n": [1, 2]}
    # When it is submitted with wait
    response = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": inputs,
                                             "wait": True})
    # Then the answer is the finished job with its result and step
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded" and job["result"] == inputs
    assert job["progress"] == 1.0 and job["duration_ms"] >= 0
    assert [s["status"] for s in job["steps"]] == ["succeeded"]
    assert response.headers["location"] == f"/v1/jobs/{job['job_id']}"


def test_async_submit_answers_202_and_polling_sees_the_chain(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json={"intent": "debug.chain",
                                             "inputs": {"steps": 5, "delay": 0.01}})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["links"]["self"] == f"/v1/jobs/{accepted['job_id']}"
    job = wait_job(client, accepted["job_id"])
    assert job["status"] == "succeeded"
    assert job["result"] == {"step": 5, "of": 5}
    assert [(s["index"], s["status"], s["attempts"]) for s in job["steps"]] == [
        (i, "succeeded", 1) for i in range(5)]
    assert [s["output"]["step"] for s in job["steps"]] == [1, 2, 3, 4, 5]


def test_events_are_ordered_and_contiguous(client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {"steps": 3},
                                        "wait": True}).json()
    events = client.get(f"/v1/jobs/{job['job_id']}/events").json()
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events] == [
        "job_queued", "job_started",
        "step_started", "step_succeeded", "step_started", "step_succeeded",
        "step_started", "step_succeeded", "job_succeeded"]
    later = client.get(f"/v1/jobs/{job['job_id']}/events", params={"after": 7}).json()
    assert [e["id"] for e in later] == [8, 9]


def test_a_failing_step_fails_the_job_with_its_reason(client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={"intent": "debug.fail",
                                        "inputs": {"message": f"boom {unique()}"},
                                        "wait": True}).json()
    assert job["status"] == "failed"
    assert "step 0 (debug.fail) failed: DebugFailure: boom" in job["error"]
    assert job["steps"][0]["status"] == "failed"


def test_an_open_breaker_is_retried_after_its_timeout_then_fails_clearly(
        client: httpx.Client) -> None:
    # Given a step whose upstream's breaker is open (rehearsed by debug.fail)
    started = time.monotonic()
    job = client.post("/v1/jobs", json={"intent": "debug.fail", "inputs": {
        "unavailable_upstream": "flaky-api", "retry_after": 0.5}})
    # Then Celery retries it once per retry_after, ORCHESTRATOR_UPSTREAM_RETRIES times
    finished = wait_job(client, job.json()["job_id"])
    assert time.monotonic() - started >= 1.0
    assert finished["status"] == "failed"
    assert "upstream flaky-api unavailable, retry after" in finished["error"]
    events = [e["type"] for e in client.get(f"/v1/jobs/{finished['job_id']}/events").json()]
    assert events.count("step_retrying") == 2
    assert finished["steps"][0]["attempts"] == 3 and "poison" not in finished["error"]


def test_repeated_request_returns_the_same_job(client: httpx.Client) -> None:
    body = {"intent": "debug.echo", "inputs": {"x": unique()}}
    first = client.post("/v1/jobs", json=body).json()
    again = client.post("/v1/jobs", json=body).json()
    assert first["job_id"] == again["job_id"]
    other = client.post("/v1/jobs", json={**body, "inputs": {"x": unique()}}).json()
    assert other["job_id"] != first["job_id"]


def test_idempotency_key_header_wins_over_the_inputs(client: httpx.Client) -> None:
    key = {"Idempotency-Key": unique()}
    first = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"a": 1}},
                        headers=key).json()
    second = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"a": 2}},
                         headers=key).json()
    assert first["job_id"] == second["job_id"]


def test_a_repeated_write_says_it_was_deduplicated_in_every_submit_answer(
        client: httpx.Client) -> None:
    # Given a write (debug.echo declares no read) submitted once, waited for
    inputs = {"d": unique()}
    first = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": inputs,
                                          "wait": True}).json()
    assert first["deduplicated"] is False
    # When it is sent again: waiting (200), not waiting (202), and as /orchestrate
    synced = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": inputs,
                                           "wait": True})
    accepted = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": inputs})
    compat = client.post("/orchestrate", json={"intent": "debug.echo", "inputs": inputs})
    # Then each answer is the first job, flagged, with the first job's id and its age
    for response in (synced, accepted, compat):
        answer = response.json()
        assert answer["job_id"] == first["job_id"], answer
        assert answer["deduplicated"] is True and answer["original_job_id"] == first["job_id"]
        assert 0 <= answer["age_seconds"] < 60
    assert (synced.status_code, accepted.status_code, compat.status_code) == (200, 202, 200)


def test_intents_show_their_effect_and_never_an_internal_step(client: httpx.Client) -> None:
    intents = {i["name"]: i for i in client.get("/v1/intents").json()}
    assert intents["memory.search"]["effect"] == "read"
    assert intents["ssh.exec.peek"]["effect"] == "read"
    assert intents["memory.write"]["effect"] == "write"
    for internal in ("llm.plan", "llm.respond", "debug.chain.link"):
        assert internal not in intents
        refused = client.post("/v1/jobs", json={"intent": internal, "inputs": {"prompt": "x"}})
        assert refused.status_code == 404, refused.text
        assert internal not in refused.json()["available"]
    # And a prompt still runs its planner
    prompt = client.post("/v1/jobs", json={"prompt": "hello", "wait": True}).json()
    assert prompt["intent"] == "llm.plan"


def test_a_tenant_never_sees_another_tenants_job(stack: Stack, client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"s": unique()},
                                        "wait": True}).json()
    with stack.client() as stranger:
        for method, path in (("GET", f"/v1/jobs/{job['job_id']}"),
                             ("GET", f"/v1/jobs/{job['job_id']}/events"),
                             ("POST", f"/v1/jobs/{job['job_id']}/cancel"),
                             ("GET", f"/jobs/{job['job_id']}")):
            response = stranger.request(method, path)
            assert response.status_code == 404, (path, response.text)
        assert stranger.get("/v1/jobs").json()["items"] == []


def test_list_filters_and_pages(client: httpx.Client) -> None:
    ids = [client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"i": i},
                                         "wait": True}).json()["job_id"] for i in range(3)]
    client.post("/v1/jobs", json={"intent": "debug.fail", "inputs": {}, "wait": True})
    page = client.get("/v1/jobs", params={"intent": "debug.echo", "limit": 2}).json()
    assert [j["job_id"] for j in page["items"]] == ids[::-1][:2]
    rest = client.get("/v1/jobs", params={"intent": "debug.echo", "limit": 2,
                                          "cursor": page["next_cursor"]}).json()
    assert [j["job_id"] for j in rest["items"]] == [ids[0]]
    failed = client.get("/v1/jobs", params={"status": "failed"}).json()["items"]
    assert [j["intent"] for j in failed] == ["debug.fail"]


def test_sse_streams_live_and_resumes_after_last_event_id(client: httpx.Client) -> None:
    job_id = client.post("/v1/jobs", json={"intent": "debug.chain",
                                           "inputs": {"steps": 3, "delay": 0.2}}).json()["job_id"]
    seen = read_sse(client, job_id, {})
    assert [e["id"] for e in seen] == list(range(1, 10))
    assert seen[-1]["type"] == "job_succeeded"
    resumed = read_sse(client, job_id, {"Last-Event-ID": "6"})
    assert [e["id"] for e in resumed] == [7, 8, 9]


def read_sse(client: httpx.Client, job_id: str, headers: dict[str, str]) -> list[dict]:
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events",
                       headers={"Accept": "text/event-stream", **headers}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    return events


def test_cancel_stops_the_running_step_and_the_rest(client: httpx.Client) -> None:
    job_id = client.post("/v1/jobs", json={"intent": "debug.chain",
                                           "inputs": {"steps": 4, "delay": 1.0}}).json()["job_id"]
    read_until(client, job_id, "step_started")
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    job = wait_job(client, job_id)
    assert job["status"] == "cancelled"
    assert [s["status"] for s in job["steps"]][1:] == ["cancelled"] * 3
    assert all(s["attempts"] == 0 for s in job["steps"][1:])
    again = client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]


def test_a_cancelled_sleep_really_stops(stack: Stack, client: httpx.Client) -> None:
    # Given two running sleeps of 1.5 s that mark their natural end in Redis
    sleep = {"intent": "debug.sleep", "inputs": {"seconds": 1.5, "mark": True}}
    job_id = client.post("/v1/jobs", json=sleep).json()["job_id"]
    read_until(client, job_id, "step_started")
    control = client.post("/v1/jobs", json=sleep,
                          headers={"Idempotency-Key": unique()}).json()["job_id"]
    # When the first is cancelled, and the second (started after it) has reached its end
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert wait_job(client, control)["status"] == "succeeded"
    # Then the cancelled one never reached its end: its handler stopped early
    broker = redis.Redis.from_url(stack.env["REDIS_URL"])
    assert broker.get(SLEPT_KEY.format(job_id=control, index=0)) is not None
    assert broker.get(SLEPT_KEY.format(job_id=job_id, index=0)) is None
    # And nothing was recorded after the cancel
    job = client.get(f"/v1/jobs/{job_id}").json()
    events = [e["type"] for e in client.get(f"/v1/jobs/{job_id}/events").json()]
    assert job["status"] == "cancelled" and job["steps"][0]["status"] == "cancelled"
    assert events[-1] == "job_cancelled" and "step_succeeded" not in events
    assert job["steps"][0]["output"] is None


def read_until(client: httpx.Client, job_id: str, event_type: str) -> None:
    with client.stream("GET", f"/v1/jobs/{job_id}/events",
                       headers={"Accept": "text/event-stream"}) as response:
        for line in response.iter_lines():
            if line.startswith("event:") and line.split(":", 1)[1].strip() == event_type:
                return


def test_tools_steps_reach_the_tools_pool_only(stack: Stack, client: httpx.Client) -> None:
    client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {"steps": 3, "delay": 0},
                                  "wait": True})
    assert "Task tasks.tools." in (stack.logs / "tools.log").read_text()
    assert "Task tasks.tools." not in (stack.logs / "others.log").read_text()


def test_every_event_is_announced_live_on_redis(stack: Stack, client: httpx.Client) -> None:
    # Given a subscriber on the live-event channel
    live = redis.Redis.from_url(stack.env["REDIS_URL"]).pubsub()
    live.subscribe(CHANNEL)
    live.get_message(timeout=1)
    # When a chain runs
    job = client.post("/v1/jobs", json={"intent": "debug.chain", "inputs": {"steps": 2},
                                        "wait": True}).json()
    # Then every stored event was also published, in order, but the submission's own (no one
    # can follow a job before its id is answered; a follower reads the store first)
    published: list[dict] = []
    while (message := live.get_message(timeout=1)) is not None:
        published += [e for e in json.loads(message["data"]) if e["job_id"] == job["job_id"]]
    stored = client.get(f"/v1/jobs/{job['job_id']}/events").json()
    assert stored[0]["type"] == "job_queued"
    assert published == stored[1:]
    live.close()


def test_concurrent_repeats_make_one_job(stack: Stack) -> None:
    # Given eight clients of one tenant sending the same request at once
    key = stack.new_key()
    body = {"intent": "debug.echo", "inputs": {"same": unique()}}

    def send(_: int) -> dict:
        with stack.client(key) as http:
            return http.post("/v1/jobs", json=body).json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(8)))
    # Then every answer names the same job
    assert len({a["job_id"] for a in answers}) == 1, answers
