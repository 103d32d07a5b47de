"""Tasks of the `callbacks` pool: send one signed delivery attempt and record it."""

import logging
import time

from adapters import callbacks
from core import deliveries
from core.deliveries import AttemptResult
from core.errors import UpstreamUnavailable
from core.events import publish
from core.store.events import append_events
from tasks.engine.app import celery_app
from tasks.engine.resources import Resources, resources

log = logging.getLogger(__name__)
LEASE_MARGIN_SECONDS = 30.0


def _attempt(rt: Resources, tenant_id: str, url: str, body: str,
             headers: dict[str, str]) -> AttemptResult:
    """One attempt, as the schedule records it: an open breaker or any error is a failed
    attempt (escaping, it would re-send at each lease expiry)."""
    try:
        attempt = rt.callbacks.send(tenant_id, url, body.encode(), headers)
    except UpstreamUnavailable as exc:
        return AttemptResult(ok=False, gone=False, status_code=None, latency_ms=0,
                             error=str(exc), retry_after=exc.retry_after)
    except Exception as exc:  # noqa: BLE001 - see above
        return AttemptResult(ok=False, gone=False, status_code=None, latency_ms=0,
                             error=f"attempt failed: {type(exc).__name__}", retry_after=None)
    return AttemptResult(ok=attempt.ok, gone=attempt.gone, status_code=attempt.status_code,
                         latency_ms=attempt.latency_ms, error=attempt.error,
                         retry_after=attempt.retry_after)


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
