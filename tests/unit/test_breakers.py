"""The retry decision and the shared retry helper, without services."""

import time

import httpx
import pybreaker
import pytest
from pydantic import BaseModel, ValidationError

from adapters.breakers import call_with_retry, should_retry
from core.errors import InvalidRequest, UpstreamError, UpstreamUnavailable
from core.settings import BreakerSettings, RetrySettings

FAST = RetrySettings(attempts=3, initial=0.001, maximum=0.005, jitter=0.0, max_retry_after=1.0)
REQUEST = httpx.Request("GET", "http://upstream.test/")


class Model(BaseModel):
    count: int


def _validation_error() -> ValidationError:
    try:
        Model.model_validate({"count": "many"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


def _status_error(status: int) -> httpx.HTTPStatusError:
    return httpx.HTTPStatusError("bad", request=REQUEST,
                                 response=httpx.Response(status, request=REQUEST))


@pytest.mark.parametrize(("exc", "expected"), [
    pytest.param(httpx.ReadTimeout("slow", request=REQUEST), True, id="httpx-timeout"),
    pytest.param(httpx.ConnectError("refused", request=REQUEST), True, id="httpx-connect"),
    pytest.param(ConnectionResetError("reset"), True, id="connection-reset"),
    pytest.param(TimeoutError("timed out"), True, id="timeout"),
    pytest.param(OSError("network unreachable"), True, id="os-error"),
    pytest.param(UpstreamError("llm", "unreachable"), True, id="upstream-no-status"),
    pytest.param(UpstreamError("llm", "boom", status=500), True, id="upstream-500"),
    pytest.param(UpstreamError("llm", "bad gateway", status=502), True, id="upstream-502"),
    pytest.param(UpstreamError("llm", "slow down", status=429), True, id="upstream-429"),
    pytest.param(_status_error(503), True, id="httpx-status-503"),
    pytest.param(UpstreamError("llm", "bad input", status=400), False, id="upstream-400"),
    pytest.param(UpstreamError("llm", "who are you", status=401), False, id="upstream-401"),
    pytest.param(UpstreamError("llm", "forbidden", status=403), False, id="upstream-403"),
    pytest.param(UpstreamError("llm", "no such model", status=404), False, id="upstream-404"),
    pytest.param(_status_error(422), False, id="httpx-status-422"),
    pytest.param(InvalidRequest("impossible"), False, id="invalid-request"),
    pytest.param(_validation_error(), False, id="pydantic-validation"),
    pytest.param(UpstreamUnavailable("llm", retry_after=3), False, id="breaker-open"),
    pytest.param(pybreaker.CircuitBreakerError("open"), False, id="pybreaker-open"),
    pytest.param(ValueError("bug"), False, id="other-error"),
    pytest.param(KeyboardInterrupt(), False, id="keyboard-interrupt"),
])
def test_should_retry(exc: BaseException, expected: bool) -> None:
    assert should_retry(exc) is expected


class Flaky:
    """A plain function that raises `exc` for its first `failures` calls, then answers."""

    def __init__(self, failures: int, exc: Exception) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def test_retries_until_success() -> None:
    # Given a function that fails twice with a connection error
    flaky = Flaky(2, ConnectionError("refused"))
    # When it is called with three attempts
    result = call_with_retry(flaky, FAST, upstream="llm")
    # Then the third attempt's answer comes back
    assert (result, flaky.calls) == ("ok", 3)


def test_stops_after_attempts_and_reraises_the_last_error() -> None:
    flaky = Flaky(10, UpstreamError("llm", "boom", status=503))
    with pytest.raises(UpstreamError) as raised:
        call_with_retry(flaky, FAST, upstream="llm")
    assert raised.value.status == 503
    assert flaky.calls == FAST.attempts


def test_does_not_retry_a_client_error() -> None:
    flaky = Flaky(1, UpstreamError("llm", "bad input", status=400))
    with pytest.raises(UpstreamError):
        call_with_retry(flaky, FAST, upstream="llm")
    assert flaky.calls == 1


def test_does_not_retry_other_errors() -> None:
    flaky = Flaky(1, ValueError("bug"))
    with pytest.raises(ValueError):
        call_with_retry(flaky, FAST, upstream="llm")
    assert flaky.calls == 1


def test_honours_retry_after_instead_of_the_backoff() -> None:
    # Given a backoff of 2 s and an upstream that asks to come back in 0.05 s
    slow_backoff = FAST.model_copy(update={"initial": 2.0, "maximum": 2.0})
    flaky = Flaky(1, UpstreamError("llm", "slow down", status=429, retry_after=0.05))
    started = time.monotonic()
    call_with_retry(flaky, slow_backoff, upstream="llm")
    # Then the retry waits the upstream's time, not the backoff
    assert 0.05 <= time.monotonic() - started < 1.0
    assert flaky.calls == 2


def test_caps_retry_after() -> None:
    capped = FAST.model_copy(update={"max_retry_after": 0.05})
    flaky = Flaky(1, UpstreamError("llm", "come back tomorrow", status=503, retry_after=86400))
    started = time.monotonic()
    call_with_retry(flaky, capped, upstream="llm")
    assert 0.05 <= time.monotonic() - started < 1.0


def test_backs_off_exponentially_without_retry_after() -> None:
    # 0.1 s then 0.2 s: the waits double from `initial`
    policy = FAST.model_copy(update={"initial": 0.1, "maximum": 1.0})
    flaky = Flaky(2, TimeoutError("slow"))
    started = time.monotonic()
    call_with_retry(flaky, policy, upstream="llm")
    assert 0.3 <= time.monotonic() - started < 1.0


def test_a_kind_of_upstream_may_have_its_own_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BREAKER_OVERRIDES", '{"ssh": 2, "flow": 3}')
    settings = BreakerSettings(fail_max=5)
    assert settings.fail_max_of("ssh:box") == 2 and settings.fail_max_of("flow:n8n") == 3
    assert settings.fail_max_of("http:ten_a:example.com:443") == 5
    assert settings.fail_max_of("llm") == 5
