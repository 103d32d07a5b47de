"""Tasks of the `callbacks` pool: send one signed delivery attempt and record it."""

import logging
import time

from adapters import callbacks, netguard
from core import deliveries
from core.deliveries import AttemptResult
from core.errors import UpstreamError, UpstreamUnavailable
from core.events import publish
from core.store.events import append_events
from tasks.engine.app import celery_app
from tasks.engine.resources import Resources, resources

log = logging.getLogger(__name__)
LEASE_MARGIN_SECONDS = 30.0
CALLBACK_PREFIX = "callback:"


def _attempt(rt: Resources, tenant_id: str, url: str, body: str,
             headers: dict[str, str]) -> AttemptResult:
    """One attempt through the tenant's breaker for the receiver's host and port; an open
    breaker is a failed attempt. A refused target is no failure of the host's (nothing was
    sent), so it is not counted."""
    settings = rt.settings.callback
    upstream = netguard.tenant_upstream(CALLBACK_PREFIX, tenant_id, url)

    def send() -> callbacks.Attempt:
        attempt = callbacks.deliver(url, body.encode(), headers, timeout=settings.timeout,
                                    max_response_bytes=settings.max_response_bytes,
                                    allowed=rt.allowed_networks)
        if not attempt.gone and (attempt.status_code is None or attempt.status_code >= 500):
            raise _Failed(attempt)
        return attempt

    try:
        attempt = rt.breakers.call(upstream, send)
    except _Failed as failed:
        attempt = failed.attempt
    except UpstreamUnavailable as exc:
        return AttemptResult(ok=False, gone=False, status_code=None, latency_ms=0,
                             error=str(exc), retry_after=exc.retry_after)
    except Exception as exc:  # noqa: BLE001 - escaping, it would re-send at each lease expiry
        return AttemptResult(ok=False, gone=False, status_code=None, latency_ms=0,
                             error=f"attempt failed: {type(exc).__name__}", retry_after=None)
    return AttemptResult(ok=attempt.ok, gone=attempt.gone, status_code=attempt.status_code,
                         latency_ms=attempt.latency_ms, error=attempt.error,
                         retry_after=attempt.retry_after)


class _Failed(UpstreamError):
    """Raised inside the breaker so a 5xx or unreachable receiver counts as a failure."""

    def __init__(self, attempt: callbacks.Attempt) -> None:
        super().__init__("callback", attempt.error or f"answered {attempt.status_code}",
                         status=attempt.status_code, retry_after=attempt.retry_after)
        self.attempt = attempt


def send(rt: Resources, delivery_id: str) -> str:
    """Claim a due delivery, sign it, try it once, and record what happened."""
    lease = rt.settings.callback.timeout + LEASE_MARGIN_SECONDS
    with rt.db.write() as session:
        delivery = deliveries.claim(session=session, delivery_id=delivery_id,
                                    lease_seconds=lease)
        if delivery is None:
            return "not due"
        secrets = deliveries.signing_secrets(session=session, tenant_id=delivery.tenant_id,
                                             vault=rt.vault)
    headers = callbacks.webhook_headers(secrets, delivery.id, int(time.time()),
                                        delivery.body.encode())
    result = _attempt(rt, delivery.tenant_id, delivery.url, delivery.body, headers)
    with rt.db.write() as session:
        recorded, kind = deliveries.record(session=session, delivery_id=delivery_id,
                                           result=result,
                                           schedule_seconds=rt.settings.callback.schedule)
        events = append_events(session=session, job_id=recorded.job_id, items=[(kind, {
            "delivery_id": delivery_id, "attempt": recorded.attempts,
            "status_code": result.status_code, "error": result.error,
            "next_attempt_at": (recorded.next_attempt_at.isoformat()
                                if recorded.next_attempt_at else None)})])
    publish(rt.redis, events)
    return kind


@celery_app.task(name="tasks.callbacks.deliver")
def deliver(delivery_id: str) -> str:
    return send(resources(), delivery_id)
