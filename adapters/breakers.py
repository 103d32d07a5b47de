"""The one retry helper and the circuit breakers of every upstream, their state shared in Redis.

pybreaker's `CircuitRedisStorage` keeps a breaker's state, fail counter and `opened_at` (whole
epoch seconds) under `orch:breaker:<upstream>:pybreaker:*`, so a breaker opened by one process
is open for all. Three things pybreaker does not do across processes are done here: a half-open
breaker admits one trial call in total (a Redis permit), not one per process; a state change is
recorded once, although every process that notices it tells its listeners; and calls are not
serialised behind pybreaker's per-process lock, which it holds for the whole guarded call.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypedDict, TypeVar

import httpx
import pybreaker
import redis
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from core.errors import NotFound, UpstreamError, UpstreamUnavailable
from core.settings import BreakerSettings, RetrySettings

log = logging.getLogger(__name__)
T = TypeVar("T")

BREAKERS_KEY = "orch:breakers"
UPSTREAMS_KEY = "orch:upstreams"
EVENTS_KEY = "orch:breaker_events"
EVENTS_KEPT = 100
TRUST_SECONDS = 0.1
STATE_GAUGE = {pybreaker.STATE_CLOSED: 0.0, pybreaker.STATE_HALF_OPEN: 1.0,
               pybreaker.STATE_OPEN: 2.0}

Gauge = tuple[str, dict[str, str], float]


class BreakerState(TypedDict):
    """One breaker as the operations API shows it."""

    name: str
    state: str
    failures: int
    opened_at: str | None
    reopens_at: str | None
    retry_after: float | None
    retries: int
    failures_total: int


# --- retries ---------------------------------------------------------------------------------


def _retryable_status(status: int | None) -> bool:
    return status is None or status >= 500 or status == 429


def should_retry(exc: BaseException) -> bool:
    """Whether a failure is upstream trouble worth another try (and a strike on its breaker)."""
    if isinstance(exc, UpstreamError):
        return _retryable_status(exc.status)
    if isinstance(exc, httpx.HTTPStatusError):
        return _retryable_status(exc.response.status_code)
    # TimeoutException is a TransportError; ConnectionError and TimeoutError are OSErrors.
    return isinstance(exc, httpx.TransportError | OSError)


def _metric(kind: str, upstream: str) -> str:
    return f"orch:metrics:{kind}:{upstream}"


def _wait(policy: RetrySettings) -> Callable[[RetryCallState], float]:
    """Jittered exponential backoff, or the upstream's own `Retry-After` (capped)."""
    backoff = (wait_exponential(multiplier=policy.initial, max=policy.maximum)
               + wait_random(0, policy.jitter))

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, UpstreamError) and exc.retry_after is not None:
            return min(exc.retry_after, policy.max_retry_after)
        return backoff(state)

    return wait


def _count_retry(client: redis.Redis | None, upstream: str, state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.info("retrying %s after attempt %d: %r", upstream, state.attempt_number, exc)
    if client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incr(_metric("retries", upstream))
        pipe.sadd(UPSTREAMS_KEY, upstream)
        pipe.execute()
    except redis.RedisError as error:  # a metric must never fail the call it counts
        log.warning("could not count a retry of %s: %s", upstream, error)


def call_with_retry(fn: Callable[[], T], policy: RetrySettings, *, upstream: str,
                    redis: redis.Redis | None = None) -> T:
    """Call `fn`, retrying upstream trouble (`should_retry`) by `policy`; re-raise the last."""
    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts), wait=_wait(policy),
        retry=retry_if_exception(should_retry), reraise=True,
        before_sleep=lambda state: _count_retry(redis, upstream, state))
    return retrying(fn)


# --- breakers --------------------------------------------------------------------------------


def _storage(client: redis.Redis, upstream: str) -> pybreaker.CircuitRedisStorage:
    return pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client,
                                         namespace=f"orch:breaker:{upstream}")


class _TrustingStorage(pybreaker.CircuitRedisStorage):
    """A breaker's shared storage that trusts what it last saw of a healthy upstream for
    `TRUST_SECONDS`: a `closed` state read (or a fail counter reset) that recently is not
    read (or reset) again, so a call to a healthy upstream costs no Redis command instead of
    two. An open or half-open state is read on every call; a change this process makes is
    written at once; one another process makes is seen within `TRUST_SECONDS`; and a failure
    of this process's always resets the counter on the next success."""

    def __init__(self, client: redis.Redis, upstream: str) -> None:
        super().__init__(pybreaker.STATE_CLOSED, client, namespace=f"orch:breaker:{upstream}")
        self._closed_until = self._reset_until = 0.0

    @property
    def state(self) -> str:
        if time.monotonic() < self._closed_until:
            return pybreaker.STATE_CLOSED
        value = str(pybreaker.CircuitRedisStorage.state.fget(self))  # type: ignore[attr-defined]
        trusted = value == pybreaker.STATE_CLOSED
        self._closed_until = time.monotonic() + TRUST_SECONDS if trusted else 0.0
        return value

    @state.setter
    def state(self, state: str) -> None:
        pybreaker.CircuitRedisStorage.state.fset(self, state)  # type: ignore[attr-defined]
        self._closed_until = self._reset_until = 0.0

    def increment_counter(self) -> None:
        super().increment_counter()
        self._reset_until = 0.0

    def reset_counter(self) -> None:
        if time.monotonic() < self._reset_until:
            return
        super().reset_counter()
        self._reset_until = time.monotonic() + TRUST_SECONDS


def _reopens_at(storage: pybreaker.CircuitRedisStorage, reset_timeout: float) -> datetime | None:
    """When an open breaker lets a trial call through, as pybreaker's open state computes it."""
    opened_at = storage.opened_at
    if storage.state != pybreaker.STATE_OPEN or opened_at is None:
        return None
    return opened_at + timedelta(seconds=reset_timeout)


def _seconds_until(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _counter(client: redis.Redis, key: str) -> int:
    return int(client.get(key) or 0)


def _names(client: redis.Redis, key: str) -> list[str]:
    return sorted(name.decode() for name in client.smembers(key))  # type: ignore[union-attr]


class _Recorder(pybreaker.CircuitBreakerListener):
    """Counts failures and records each state change once in Redis, whichever process sees it."""

    def __init__(self, client: redis.Redis, upstream: str) -> None:
        self.client = client
        self.upstream = upstream

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        try:
            self.client.incr(_metric("failures", self.upstream))
        except redis.RedisError as error:
            log.warning("could not count a failure of %s: %s", self.upstream, error)

    def state_change(self, cb: pybreaker.CircuitBreaker,
                     old_state: pybreaker.CircuitBreakerState | None,
                     new_state: pybreaker.CircuitBreakerState) -> None:
        try:
            self._record(new_state.name)
        except redis.RedisError as error:
            log.warning("could not record breaker %s turning %s: %s", self.upstream,
                        new_state.name, error)

    def _record(self, new: str) -> None:
        # Every process whose cached state is stale is told of the change too: the atomic swap
        # lets only the first teller record it, with the state it really came from.
        seen = f"orch:breaker:{self.upstream}:seen"
        previous = self.client.set(seen, new, get=True)
        old = previous.decode() if isinstance(previous, bytes) else pybreaker.STATE_CLOSED
        if old == new:
            return
        event = {"upstream": self.upstream, "old": old, "new": new,
                 "time": datetime.now(UTC).isoformat()}
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(_metric("breaker_changes", self.upstream))
        pipe.lpush(EVENTS_KEY, json.dumps(event))
        pipe.ltrim(EVENTS_KEY, 0, EVENTS_KEPT - 1)
        pipe.execute()
        level = logging.WARNING if new == pybreaker.STATE_OPEN else logging.INFO
        log.log(level, "breaker %s: %s -> %s", self.upstream, old, new)


class Breakers:
    """One circuit breaker per upstream, built on demand, with state shared through Redis."""

    def __init__(self, client: redis.Redis, settings: BreakerSettings) -> None:
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("Breakers need a Redis client with decode_responses=False")
        self.client = client
        self.settings = settings
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._lock = threading.Lock()

    def breaker(self, upstream: str) -> pybreaker.CircuitBreaker:
        """The breaker named `upstream` (one per process), its state kept in Redis; it opens
        after BREAKER_FAIL_MAX failures, or its kind's BREAKER_OVERRIDES."""
        with self._lock:
            return self._breakers.get(upstream) or self._new_breaker(upstream)

    def _new_breaker(self, upstream: str) -> pybreaker.CircuitBreaker:
        self.client.sadd(BREAKERS_KEY, upstream)
        # Only upstream trouble counts; a 4xx or a bad request proves the upstream answers.
        # The call that trips the breaker raises its own error, later calls fail fast.
        breaker = pybreaker.CircuitBreaker(
            fail_max=self.settings.fail_max_of(upstream),
            reset_timeout=self.settings.reset_timeout,
            exclude=[lambda exc: not should_retry(exc)],
            listeners=[_Recorder(self.client, upstream)],
            state_storage=_TrustingStorage(self.client, upstream), name=upstream,
            throw_new_error_on_trip=False)
        self._breakers[upstream] = breaker
        return breaker

    def call(self, upstream: str, fn: Callable[[], T], policy: RetrySettings | None = None) -> T:
        """Run `fn` through the upstream's breaker (retried inside it by `policy`, if given)."""
        breaker = self.breaker(upstream)
        guarded = fn if policy is None else (
            lambda: call_with_retry(fn, policy, upstream=upstream, redis=self.client))
        state = breaker.state  # one read of the shared state (the state object follows it)
        trial = self._admit(upstream, state.name)
        try:
            # `breaker.call` would hold the breaker's lock for the whole call, serialising every
            # thread of this process that calls this upstream; the counters are atomic in Redis.
            return state.call(guarded)
        except pybreaker.CircuitBreakerError as exc:
            raise UpstreamUnavailable(upstream, self._retry_after(upstream)) from exc
        finally:
            if trial:
                self.client.delete(self._trial_key(upstream))

    def _admit(self, upstream: str, state: str) -> bool:
        """Fail fast while open; once the timeout elapsed, admit one trial call of all processes."""
        if state == pybreaker.STATE_CLOSED:
            return False
        retry_after = self._retry_after(upstream)
        if state == pybreaker.STATE_OPEN and retry_after > 0:
            raise UpstreamUnavailable(upstream, retry_after)
        trial_key = self._trial_key(upstream)
        if self.client.set(trial_key, 1, nx=True, px=int(self.settings.reset_timeout * 1000)):
            return True
        waiting = self.client.pttl(trial_key)
        raise UpstreamUnavailable(upstream, max(0, int(waiting)) / 1000)

    @staticmethod
    def _trial_key(upstream: str) -> str:
        return f"orch:breaker:{upstream}:trial"

    def _retry_after(self, upstream: str) -> float:
        storage = _storage(self.client, upstream)
        return _seconds_until(_reopens_at(storage, self.settings.reset_timeout))

    def states(self) -> list[BreakerState]:
        """Every breaker any process made, read from Redis."""
        return [self._describe(name) for name in _names(self.client, BREAKERS_KEY)]

    def _describe(self, name: str) -> BreakerState:
        storage = _storage(self.client, name)
        opened_at, reopens_at = storage.opened_at, _reopens_at(storage, self.settings.reset_timeout)
        state = storage.state
        return BreakerState(
            name=name, state=state, failures=storage.counter,
            opened_at=opened_at.isoformat() if opened_at and state != "closed" else None,
            reopens_at=reopens_at.isoformat() if reopens_at else None,
            retry_after=_seconds_until(reopens_at) if reopens_at else None,
            retries=_counter(self.client, _metric("retries", name)),
            failures_total=_counter(self.client, _metric("failures", name)))

    def reset(self, name: str) -> BreakerState:
        """Close a breaker by hand, for every process."""
        if not self.client.sismember(BREAKERS_KEY, name):
            raise NotFound(f"no circuit breaker named '{name}'")
        self.breaker(name).close()
        self.client.delete(self._trial_key(name))
        return self._describe(name)


def render_gauges(client: redis.Redis) -> list[Gauge]:
    """Prometheus samples (metric, labels, value) of every breaker and upstream, from Redis."""
    samples: list[Gauge] = []
    for name in _names(client, BREAKERS_KEY):
        samples.append(("orchestrator_breaker_state", {"upstream": name},
                        STATE_GAUGE.get(_storage(client, name).state, 0.0)))
    for name in sorted({*_names(client, BREAKERS_KEY), *_names(client, UPSTREAMS_KEY)}):
        samples.append(("orchestrator_upstream_retries_total", {"upstream": name},
                        float(_counter(client, _metric("retries", name)))))
        samples.append(("orchestrator_upstream_failures_total", {"upstream": name},
                        float(_counter(client, _metric("failures", name)))))
    return samples

