"""The one shape of an external system: its breakers, its retry policy, and `close`.

Every adapter is an `Upstream`, built once per process (by its `Resources`) and closed with it.
A call goes through `guarded(name, fn)`: the breaker `name` (the upstream's own, or one of its
hosts', its state shared through Redis) around the upstream's retry policy.
"""

from collections.abc import Callable
from typing import TypeVar

from adapters.breakers import Breakers
from core.settings import RetrySettings

T = TypeVar("T")


class Upstream:
    """An external system: calls pass its breaker and retry policy; `close` releases it."""

    def __init__(self, breakers: Breakers, retry: RetrySettings | None) -> None:
        self.breakers = breakers
        self.retry = retry

    def guarded(self, name: str, fn: Callable[[], T], *, retry: bool = True) -> T:
        """`fn` through the breaker `name`, retried by the policy unless `retry` is False (a
        request that is not idempotent)."""
        return self.breakers.call(name, fn, self.retry if retry else None)

    def close(self) -> None:
        """Release this upstream's connections (nothing, unless it holds some)."""
