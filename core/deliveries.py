"""Callback deliveries in the job store: the outbox row, its attempts, its schedule."""

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from secrets import token_bytes
from typing import Any

from sqlalchemy import and_, bindparam, insert, update
from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound
from core.models import Delivery, DeliveryAttempt, DeliveryStatus, EventType, Tenant, utcnow
from core.vault import Vault

DELIVERIES = Delivery.__table__  # type: ignore[attr-defined]
# Inline: reads nothing back, so a job's end can send it in its pipeline (`record_job`).
DELIVERIES_INSERT = insert(DELIVERIES).inline()
ATTEMPTS = DeliveryAttempt.__table__  # type: ignore[attr-defined]
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


@dataclass(frozen=True)
class Outcome:
    """What a callback says about a job that ended."""

    job_id: str
    tenant_id: str
    callback_url: str
    status: str
    intent: str
    mode: str
    result: Any
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime


@dataclass(frozen=True)
class AttemptResult:
    """One attempt's outcome, as the delivery adapter reports it."""

    ok: bool
    gone: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    retry_after: float | None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def body_for(outcome: Outcome) -> str:
    """The callback body: `{type, timestamp, data}` with the job's outcome and links."""
    root = f"/v1/jobs/{outcome.job_id}"
    duration = int((outcome.finished_at - outcome.created_at).total_seconds() * 1000)
    data = {"job_id": outcome.job_id, "status": outcome.status, "intent": outcome.intent,
            "mode": outcome.mode, "result": outcome.result, "error": outcome.error,
            "created_at": _iso(outcome.created_at), "started_at": _iso(outcome.started_at),
            "finished_at": _iso(outcome.finished_at), "duration_ms": duration,
            "links": {"self": root, "events": f"{root}/events"}}
    return json.dumps({"type": f"job.{outcome.status}", "timestamp": _iso(outcome.finished_at),
                       "data": data}, default=str, separators=(",", ":"))


def schedule(*, session: Session, outcome: Outcome) -> str:
    """Write the outbox row for a job that just ended, due now; returns its id."""
    delivery_id = f"msg_{uuid.uuid4().hex}"
    now = utcnow()
    session.execute(DELIVERIES_INSERT, [{
        "id": delivery_id, "job_id": outcome.job_id, "tenant_id": outcome.tenant_id,
        "url": outcome.callback_url, "body": body_for(outcome), "status": DeliveryStatus.pending,
        "attempts": 0, "next_attempt_at": now, "created_at": now}])
    return delivery_id


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for one attempt: what sending it needs."""

    id: str
    job_id: str
    tenant_id: str
    url: str
    body: str
    attempts: int


def claim_due(*, session: Session, limit: int, lease_seconds: float) -> list[Claimed]:
    """Take up to `limit` due deliveries, the longest due first, for one attempt each, leased
    for `lease_seconds` (a lost attempt's lease expires and it is due again, see `due`).

    One statement: concurrent claimers skip each other's rows (Postgres `SKIP LOCKED`; SQLite
    has one writer), so a delivery is never taken twice.
    """
    now = utcnow()
    due_ids = (select(DELIVERIES.c.id)
               .where(DELIVERIES.c.status == DeliveryStatus.pending,
                      DELIVERIES.c.next_attempt_at.is_not(None),
                      DELIVERIES.c.next_attempt_at <= now)
               .order_by(DELIVERIES.c.next_attempt_at).limit(limit)
               .with_for_update(skip_locked=True))
    rows = session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id.in_(due_ids.scalar_subquery()),
               DELIVERIES.c.status == DeliveryStatus.pending)
        .values(status=DeliveryStatus.sending, lease_until=now + timedelta(seconds=lease_seconds),
                attempts=DELIVERIES.c.attempts + 1)
        .returning(DELIVERIES.c.id, DELIVERIES.c.job_id, DELIVERIES.c.tenant_id,
                   DELIVERIES.c.url, DELIVERIES.c.body, DELIVERIES.c.attempts))
    return [Claimed(*row) for row in rows]


@dataclass(frozen=True)
class Recorded:
    """An attempt as stored: its delivery, job, number, the event it makes, and when the next
    attempt is due (None: no more)."""

    delivery_id: str
    job_id: str
    attempts: int
    kind: EventType
    next_attempt_at: datetime | None


def _next(attempts: int, result: AttemptResult, schedule_seconds: list[float],
          now: datetime) -> tuple[EventType, dict[str, Any]]:
    """What an attempt's outcome makes of its delivery: the event, and the delivery's values."""
    done = {"next_attempt_at": None, "finished_at": now}
    if result.ok:
        return EventType.callback_succeeded, {"status": DeliveryStatus.succeeded, **done}
    if result.gone or attempts > len(schedule_seconds):
        return EventType.callback_dead, {"status": DeliveryStatus.dead, **done}
    wait = max(schedule_seconds[attempts - 1], result.retry_after or 0.0)
    return EventType.callback_failed, {"status": DeliveryStatus.pending, "finished_at": None,
                                       "next_attempt_at": now + timedelta(seconds=wait)}


def record_many(*, session: Session, results: list[tuple[str, AttemptResult]],
                schedule_seconds: list[float]) -> list[Recorded]:
    """Store the attempts of leased deliveries and decide what comes next for each, in the
    same few statements however many there are (rows locked in id order)."""
    ids = sorted(delivery_id for delivery_id, _ in results)
    held = {row.id: row for row in session.execute(
        select(DELIVERIES.c.id, DELIVERIES.c.job_id,
               DELIVERIES.c.attempts)
        .where(DELIVERIES.c.id.in_(ids)).order_by(DELIVERIES.c.id).with_for_update())}
    now, logged, changes, recorded = utcnow(), [], [], []
    for delivery_id, result in results:
        row = held[delivery_id]
        kind, values = _next(row.attempts, result, schedule_seconds, now)
        logged.append({"delivery_id": delivery_id, "number": row.attempts,
                       "started_at": now - timedelta(milliseconds=result.latency_ms),
                       "status_code": result.status_code, "latency_ms": result.latency_ms,
                       "error": result.error})
        changes.append({"b_id": delivery_id, "b_code": result.status_code,
                        "b_error": result.error, **{f"b_{k}": v for k, v in values.items()}})
        recorded.append(Recorded(delivery_id, row.job_id, row.attempts, kind,
                                 values["next_attempt_at"]))
    if logged:
        session.execute(insert(ATTEMPTS), logged)
        session.execute(update(DELIVERIES).where(DELIVERIES.c.id == bindparam("b_id")).values(
            status=bindparam("b_status"), next_attempt_at=bindparam("b_next_attempt_at"),
            finished_at=bindparam("b_finished_at"), last_status_code=bindparam("b_code"),
            last_error=bindparam("b_error"), lease_until=None), changes)
    return recorded


def due(*, session: Session, limit: int) -> list[str]:
    """Deliveries to send now; leases of attempts whose worker died are released first."""
    now = utcnow()
    session.execute(update(DELIVERIES)
                    .where(DELIVERIES.c.status == DeliveryStatus.sending,
                           DELIVERIES.c.lease_until < now)
                    .values(status=DeliveryStatus.pending, lease_until=None,
                            last_error="the worker sending this attempt was lost"))
    rows = session.exec(select(Delivery.id).where(
        Delivery.status == DeliveryStatus.pending,
        and_(col(Delivery.next_attempt_at).is_not(None), col(Delivery.next_attempt_at) <= now))
        .order_by(col(Delivery.next_attempt_at)).limit(limit))
    return list(rows)


def redeliver(*, session: Session, tenant_id: str, delivery_id: str) -> Delivery:
    """Make a delivery due again now, with the same id (so the same `webhook-id`)."""
    delivery = get_delivery(session=session, tenant_id=tenant_id, delivery_id=delivery_id)
    if delivery.status in (DeliveryStatus.sending, DeliveryStatus.pending):
        raise Conflict(f"delivery {delivery_id} is {delivery.status}; wait for it to finish")
    delivery.status, delivery.next_attempt_at, delivery.finished_at = (
        DeliveryStatus.pending, utcnow(), None)
    session.add(delivery)
    return delivery


def get_delivery(*, session: Session, tenant_id: str, delivery_id: str) -> Delivery:
    """A tenant's delivery; another tenant's does not exist."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.tenant_id != tenant_id:
        raise NotFound(f"delivery {delivery_id} not found")
    return delivery


def attempts(*, session: Session, delivery_id: str) -> list[DeliveryAttempt]:
    return list(session.exec(select(DeliveryAttempt)
                             .where(DeliveryAttempt.delivery_id == delivery_id)
                             .order_by(col(DeliveryAttempt.number))))


def list_deliveries(*, session: Session, tenant_id: str, job_id: str | None,
                    status: DeliveryStatus | None, limit: int) -> list[Delivery]:
    """A tenant's deliveries, newest first."""
    query = select(Delivery).where(Delivery.tenant_id == tenant_id)
    if job_id is not None:
        query = query.where(Delivery.job_id == job_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    return list(session.exec(query.order_by(col(Delivery.created_at).desc()).limit(limit)))


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode()


def signing_secrets(*, session: Session, tenant_id: str, vault: Vault) -> list[str]:
    """The secrets to sign with: the current one, and the previous during a rotation (stored
    sealed, returned opened). Every tenant has one from its creation (a read changes nothing)."""
    tenant = session.get_one(Tenant, tenant_id)
    secrets = [tenant.webhook_secret]
    expires = tenant.previous_secret_expires_at
    if tenant.previous_webhook_secret and expires and expires > utcnow():
        secrets.append(tenant.previous_webhook_secret)
    return [vault.open(secret) for secret in secrets]


def rotate_secret(*, session: Session, tenant_id: str, vault: Vault,
                  overlap: timedelta) -> Tenant:
    """Make a new secret current (sealed); the old one still signs for `overlap`."""
    tenant = session.get_one(Tenant, tenant_id, with_for_update=True)
    tenant.previous_webhook_secret = tenant.webhook_secret or None
    tenant.previous_secret_expires_at = utcnow() + overlap
    tenant.webhook_secret = vault.seal(new_secret())
    session.add(tenant)
    return tenant
