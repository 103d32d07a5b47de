"""Debug intents' plain functions: they exercise the pipeline without external systems."""

import time
from collections.abc import Callable
from typing import Any

from core.errors import UpstreamUnavailable


def echo(inputs: dict[str, Any]) -> dict[str, Any]:
    """Return the inputs unchanged."""
    return inputs


def sleep(seconds: float, cancelled: Callable[[], bool], tick: float = 0.1) -> dict[str, Any]:
    """Sleep `seconds`, stopping early once `cancelled()` says so; returns the time slept."""
    started = time.monotonic()
    deadline = started + seconds
    while (now := time.monotonic()) < deadline:
        if cancelled():
            return {"slept": round(now - started, 3), "cancelled": True}
        time.sleep(min(tick, deadline - now))
    return {"slept": round(time.monotonic() - started, 3), "cancelled": False}


def chain_link(step: int, of: int, delay: float) -> dict[str, Any]:
    """One link of `debug.chain`: wait `delay`, then report its place."""
    if delay:
        time.sleep(delay)
    return {"step": step, "of": of}


class DebugFailure(Exception):
    """Raised by `debug.fail`, on purpose."""


def fail(message: str, unavailable_upstream: str | None, retry_after: float) -> None:
    """Raise `DebugFailure(message)`, or an open breaker's error for `unavailable_upstream`."""
    if unavailable_upstream:
        raise UpstreamUnavailable(unavailable_upstream, retry_after)
    raise DebugFailure(message)
