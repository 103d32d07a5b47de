"""Circuit breakers shared by separate OS processes through a real Valkey, on a real upstream."""

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pybreaker
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.breakers import EVENTS_KEY, TRUST_SECONDS, Breakers, render_gauges
from api.deps import Caller, get_caller, get_state
from api.routes import breakers as breaker_routes
from core.errors import NotFound, UpstreamError, UpstreamUnavailable
from core.models import Scope
from core.settings import BreakerSettings, RetrySettings

ROOT = Path(__file__).resolve().parents[2]
NAME = "flaky"
SETTINGS = BreakerSettings(fail_max=3, reset_timeout=30)

# One process's calls through the breaker: prints the outcome of each call as a JSON list.
CALLER = """
import json, sys
import httpx, redis
from adapters.breakers import Breakers
from core.errors import UpstreamError
from core.settings import BreakerSettings

redis_url, url, name, calls, fail_max, reset_timeout = sys.argv[1:]

def get():
    answer = httpx.get(url, timeout=5)
    if answer.status_code >= 400:
        raise UpstreamError(name, "answered badly", status=answer.status_code)
    return answer.status_code

breakers = Breakers(redis.Redis.from_url(redis_url),
                    BreakerSettings(fail_max=int(fail_max), reset_timeout=float(reset_timeout)))
outcomes = []
for _ in range(int(calls)):
    try:
        outcomes.append(str(breakers.call(name, get)))
    except Exception as exc:
        outcomes.append(type(exc).__name__)
print(json.dumps(outcomes))
"""


class Upstream(ThreadingHTTPServer):
    """A loopback HTTP upstream answering `status` after `delay`, counting requests."""

    status = 500
    delay = 0.0
    hits = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class Handler(BaseHTTPRequestHandler):
    server: Upstream

    def do_GET(self) -> None:
        self.server.hits += 1
        time.sleep(self.server.delay)
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def client(broker_url: str) -> Iterator[redis.Redis]:
    """A private Redis database (7), empty at the start of each test."""
    with redis.Redis.from_url(_db_url(broker_url)) as connection:
        connection.flushdb()
        yield connection


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _db_url(broker_url: str) -> str:
    return broker_url.rsplit("/", 1)[0] + "/7"


def run_process(broker_url: str, upstream: Upstream, calls: int,
                settings: BreakerSettings = SETTINGS) -> list[str]:
    """Call the upstream `calls` times through its breaker from a separate OS process."""
    args = [_db_url(broker_url), upstream.url, NAME, str(calls), str(settings.fail_max),
            str(settings.reset_timeout)]
    done = subprocess.run([sys.executable, "-c", CALLER, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=True)
    outcomes: list[str] = json.loads(done.stdout)
    return outcomes


def get(upstream: Upstream) -> int:
    answer = httpx.get(upstream.url, timeout=5)
    if answer.status_code >= 400:
        raise UpstreamError(NAME, "answered badly", status=answer.status_code)
    return answer.status_code


def state_of(client: redis.Redis, settings: BreakerSettings = SETTINGS) -> dict[str, object]:
    (state,) = Breakers(client, settings).states()
    return dict(state)


def test_a_breaker_opened_by_one_process_is_open_in_another(
        broker_url: str, client: redis.Redis, upstream: Upstream) -> None:
    # Given one process that fails fail_max times: the tripping call still shows its own error
    assert run_process(broker_url, upstream, calls=3) == ["UpstreamError"] * 3
    assert upstream.hits == 3
    # When a second process calls the same upstream
    outcomes = run_process(broker_url, upstream, calls=2)
    # Then it fails fast, and the upstream is not asked again
    assert outcomes == ["UpstreamUnavailable"] * 2
    assert upstream.hits == 3
    # And this process, which never called it, reads the breaker open with its failures
    state = state_of(client)
    assert state["state"] == "open"
    assert (state["failures"], state["failures_total"]) == (3, 3)
    assert state["opened_at"] is not None
    assert 15 < float(state["retry_after"]) <= 30  # type: ignore[arg-type]
    events = [json.loads(raw) for raw in client.lrange(EVENTS_KEY, 0, -1)]
    assert [(e["upstream"], e["old"], e["new"]) for e in events] == [(NAME, "closed", "open")]


def test_an_open_breaker_raises_upstream_unavailable_with_retry_after(
        client: redis.Redis, upstream: Upstream) -> None:
    breakers = Breakers(client, SETTINGS)
    for _ in range(3):
        with pytest.raises(UpstreamError):
            breakers.call(NAME, lambda: get(upstream))
    with pytest.raises(UpstreamUnavailable) as raised:
        breakers.call(NAME, lambda: get(upstream))
    assert 28 < raised.value.retry_after <= 30
    assert upstream.hits == 3


def test_reset_lets_calls_through_again_in_every_process(
        broker_url: str, client: redis.Redis, upstream: Upstream) -> None:
    run_process(broker_url, upstream, calls=3)
    upstream.status = 200
    # When the breaker is reset from this process
    state = Breakers(client, SETTINGS).reset(NAME)
    # Then it is closed, and another process's call reaches the upstream
    assert (state["state"], state["failures"]) == ("closed", 0)
    assert run_process(broker_url, upstream, calls=1) == ["200"]
    assert upstream.hits == 4


def test_after_the_reset_timeout_a_trial_call_closes_it(
        broker_url: str, client: redis.Redis, upstream: Upstream) -> None:
    quick = BreakerSettings(fail_max=2, reset_timeout=1)
    assert run_process(broker_url, upstream, calls=3, settings=quick)[-1] == "UpstreamUnavailable"
    upstream.status = 200
    time.sleep(1.1)
    assert run_process(broker_url, upstream, calls=2, settings=quick) == ["200", "200"]
    assert state_of(client, quick)["state"] == "closed"


def test_a_failed_trial_call_opens_it_again(
        broker_url: str, client: redis.Redis, upstream: Upstream) -> None:
    quick = BreakerSettings(fail_max=2, reset_timeout=1)
    run_process(broker_url, upstream, calls=2, settings=quick)
    time.sleep(1.1)
    assert run_process(broker_url, upstream, calls=2, settings=quick) == [
        "UpstreamError", "UpstreamUnavailable"]
    assert upstream.hits == 3
    assert state_of(client, quick)["state"] == "open"


def test_only_one_trial_call_while_half_open(client: redis.Redis, upstream: Upstream) -> None:
    # Given an open breaker whose timeout has elapsed, and a slow but healthy upstream
    quick = BreakerSettings(fail_max=1, reset_timeout=1)
    breakers = Breakers(client, quick)
    with pytest.raises(UpstreamError):
        breakers.call(NAME, lambda: get(upstream))
    time.sleep(1.1)
    upstream.status, upstream.delay = 200, 0.5
    # When two callers arrive while the first (the trial) is in flight
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def caller(pause: float) -> None:
        barrier.wait()
        time.sleep(pause)
        try:
            outcomes.append(str(Breakers(client, quick).call(NAME, lambda: get(upstream))))
        except UpstreamUnavailable:
            outcomes.append("UpstreamUnavailable")

    threads = [threading.Thread(target=caller, args=(pause,)) for pause in (0, 0.2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then only the trial reached the upstream, and it closed the breaker
    assert outcomes == ["UpstreamUnavailable", "200"]
    assert upstream.hits == 2
    assert state_of(client, quick)["state"] == "closed"


def test_client_errors_do_not_open_it(
        broker_url: str, client: redis.Redis, upstream: Upstream) -> None:
    upstream.status = 404
    assert run_process(broker_url, upstream, calls=5) == ["UpstreamError"] * 5
    assert upstream.hits == 5
    state = state_of(client)
    assert (state["state"], state["failures"], state["failures_total"]) == ("closed", 0, 0)


def test_retries_happen_inside_one_breaker_failure(client: redis.Redis, upstream: Upstream) -> None:
    # Given three attempts per call and a breaker that opens after two failed calls
    policy = RetrySettings(attempts=3, initial=0.001, maximum=0.005, jitter=0, max_retry_after=1)
    breakers = Breakers(client, BreakerSettings(fail_max=2, reset_timeout=30))
    with pytest.raises(UpstreamError):
        breakers.call(NAME, lambda: get(upstream), policy)
    # Then one call is three requests, two retries and one failure against the breaker
    assert upstream.hits == 3
    state = state_of(client)
    assert (state["state"], state["failures"], state["retries"]) == ("closed", 1, 2)
    with pytest.raises(UpstreamError):
        breakers.call(NAME, lambda: get(upstream), policy)
    assert upstream.hits == 6
    assert state_of(client)["state"] == "open"
    samples = render_gauges(client)
    assert ("orchestrator_breaker_state", {"upstream": NAME}, 2.0) in samples
    assert ("orchestrator_upstream_retries_total", {"upstream": NAME}, 4.0) in samples
    assert ("orchestrator_upstream_failures_total", {"upstream": NAME}, 2.0) in samples


def test_calls_of_one_process_are_not_serialised(client: redis.Redis, upstream: Upstream) -> None:
    upstream.status, upstream.delay = 200, 0.5
    breakers = Breakers(client, SETTINGS)
    breakers.breaker(NAME)
    threads = [threading.Thread(target=breakers.call, args=(NAME, lambda: get(upstream)))
               for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert upstream.hits == 4
    assert time.monotonic() - started < 1.5


def test_reset_of_an_unknown_breaker_is_not_found(client: redis.Redis) -> None:
    with pytest.raises(NotFound):
        Breakers(client, SETTINGS).reset("nobody")


def test_the_pybreaker_state_lives_in_redis(client: redis.Redis, upstream: Upstream) -> None:
    breaker = Breakers(client, SETTINGS).breaker(NAME)
    breaker.open()
    assert client.get(f"orch:breaker:{NAME}:pybreaker:state") == pybreaker.STATE_OPEN.encode()
    assert client.smembers("orch:breakers") == {NAME.encode()}


def test_routes_list_and_reset(broker_url: str, client: redis.Redis,
                               upstream: Upstream) -> None:
    # Given the router on an app whose state is this Redis, and an open breaker
    run_process(broker_url, upstream, calls=3)
    app = FastAPI()
    app.include_router(breaker_routes.router)
    state = type("State", (), {"redis": client, "settings": type("S", (), {"breaker": SETTINGS})})()
    app.dependency_overrides[get_state] = lambda: state
    app.dependency_overrides[get_caller] = lambda: Caller("ops", "key_ops",
                                                          frozenset({Scope.operator}))
    with TestClient(app) as http:
        listed = http.get("/v1/breakers").json()
        reset = http.post(f"/v1/breakers/{NAME}/reset").json()
    assert [(b["name"], b["state"], b["failures"]) for b in listed] == [(NAME, "open", 3)]
    assert (reset["state"], reset["reopens_at"]) == ("closed", None)


def test_each_state_change_is_recorded_once(client: redis.Redis, upstream: Upstream) -> None:
    # Given a process that opened the breaker and another whose trial call closes it
    quick = BreakerSettings(fail_max=1, reset_timeout=1)
    opener, closer = Breakers(client, quick), Breakers(client, quick)
    with pytest.raises(UpstreamError):
        opener.call(NAME, lambda: get(upstream))
    time.sleep(1.1)
    upstream.status = 200
    closer.call(NAME, lambda: get(upstream))
    # When the opener, which still holds "open", notices the change on its next call
    opener.call(NAME, lambda: get(upstream))
    # Then every change is in the log once, oldest last
    events = [json.loads(raw) for raw in client.lrange(EVENTS_KEY, 0, -1)]
    assert [(e["old"], e["new"]) for e in events] == [
        ("half-open", "closed"), ("open", "half-open"), ("closed", "open")]
    assert client.get(f"orch:metrics:breaker_changes:{NAME}") == b"3"


def test_a_healthy_upstream_is_called_without_reading_redis_each_time_yet_an_open_is_seen(
        broker_url: str, client: redis.Redis, upstream: Upstream) -> None:
    # Given a process whose Redis commands are counted, calling a healthy upstream
    counted = redis.Redis.from_url(_db_url(broker_url))
    commands: list[str] = []
    send = counted.execute_command

    def count(*args: Any, **options: Any) -> Any:
        commands.append(str(args[0]))
        return send(*args, **options)

    counted.execute_command = count  # type: ignore[method-assign]
    here, elsewhere = Breakers(counted, SETTINGS), Breakers(client, SETTINGS)
    upstream.status = 200
    here.call(NAME, lambda: get(upstream))
    # When it calls 50 times in a row
    commands.clear()
    started = time.monotonic()
    for _ in range(50):
        assert here.call(NAME, lambda: get(upstream)) == 200
    elapsed = time.monotonic() - started
    # Then the shared state was read (and the counter reset) at most once per trust window,
    # not once each per call (100 commands)
    assert len(commands) <= 2 * (elapsed / TRUST_SECONDS + 1) < 100, (len(commands), elapsed)
    # And when another process opens the breaker, this one fails fast once the window passed
    upstream.status = 500
    for _ in range(SETTINGS.fail_max):
        with pytest.raises(UpstreamError):
            elsewhere.call(NAME, lambda: get(upstream))
    hits = upstream.hits
    time.sleep(TRUST_SECONDS + 0.05)
    with pytest.raises(UpstreamUnavailable):
        here.call(NAME, lambda: get(upstream))
    assert upstream.hits == hits
