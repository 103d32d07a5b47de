"""The `callbacks` pool's drainer: claims due deliveries in batches, keeps up to
`CALLBACK_CONCURRENCY` signed attempts in flight (kept-alive connections per receiver), and
records each batch of outcomes in one transaction. How it is woken: `tasks.engine.outbox`."""

import contextlib
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import redis
from celery import Celery
from sqlalchemy.exc import SQLAlchemyError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from adapters import callbacks
from core import deliveries
from core.deliveries import AttemptResult, Claimed
from core.errors import UpstreamUnavailable
from core.events import LiveEvent, publish
from core.store.events import append_many
from tasks.engine import outbox
from tasks.engine.app import celery_app, shutting_down
from tasks.engine.resources import Resources, resources

log = logging.getLogger(__name__)
LEASE_MARGIN_SECONDS = 30.0
POLL_SECONDS = 0.02
LOOK_SECONDS = 1.0
MAX_DRAIN_SECONDS = 300.0
RECORD_PATIENCE_SECONDS = 30.0
Sending = dict[Future[AttemptResult], Claimed]

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _senders(size: int) -> ThreadPoolExecutor:
    """This process's threads that send attempts (one pool, whatever the drainer)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="callback")
        return _executor


def _attempt(rt: Resources, delivery: Claimed, secrets: list[str]) -> AttemptResult:
    """One signed attempt, as the schedule records it: an open breaker or any error is a failed
    attempt (escaping, it would be sent again at each lease expiry)."""
    try:
        headers = callbacks.webhook_headers(secrets, delivery.id, int(time.time()),
                                            delivery.body.encode())
        attempt = rt.callbacks.send(delivery.tenant_id, delivery.url, delivery.body.encode(),
                                    headers)
    except UpstreamUnavailable as exc:
        return AttemptResult(ok=False, gone=False, status_code=None, latency_ms=0,
                             error=str(exc), retry_after=exc.retry_after)
    except Exception as exc:  # noqa: BLE001 - see above
        return AttemptResult(ok=False, gone=False, status_code=None, latency_ms=0,
                             error=f"attempt failed: {type(exc).__name__}", retry_after=None)
    return AttemptResult(ok=attempt.ok, gone=attempt.gone, status_code=attempt.status_code,
                         latency_ms=attempt.latency_ms, error=attempt.error,
                         retry_after=attempt.retry_after)


def _claim(rt: Resources, limit: int) -> list[tuple[Claimed, list[str]]]:
    """Due deliveries (at most `limit`), each with its tenant's signing secrets; none while
    the store cannot answer (they stay due)."""
    try:
        return _claim_due(rt, limit)
    except SQLAlchemyError as exc:
        log.warning("callbacks: could not claim due deliveries (%s)", type(exc).__name__)
        time.sleep(POLL_SECONDS * 10)
        return []


def _claim_due(rt: Resources, limit: int) -> list[tuple[Claimed, list[str]]]:
    lease = rt.settings.callback.timeout + LEASE_MARGIN_SECONDS
    with rt.db.write() as session:
        claimed = deliveries.claim_due(session=session, limit=limit, lease_seconds=lease)
        secrets = {tenant: deliveries.signing_secrets(session=session, tenant_id=tenant,
                                                      vault=rt.vault)
                   for tenant in {delivery.tenant_id for delivery in claimed}}
    return [(delivery, secrets[delivery.tenant_id]) for delivery in claimed]


def _record(rt: Resources, done: list[tuple[Claimed, AttemptResult]]) -> list[LiveEvent]:
    """Record finished attempts and their events in one transaction of a few statements (rows
    locked in id order, so two drainers never wait on each other's locks), patiently: a short
    store outage must not lose them (a lost one is sent again when its lease expires)."""
    schedule = rt.settings.callback.schedule
    for attempt in Retrying(stop=stop_after_delay(RECORD_PATIENCE_SECONDS),
                            wait=wait_exponential(multiplier=0.1, max=2),
                            retry=retry_if_exception_type(SQLAlchemyError), reraise=True):
        with attempt, rt.db.write() as session:
            recorded = deliveries.record_many(
                session=session, results=[(delivery.id, result) for delivery, result in done],
                schedule_seconds=schedule)
            return append_many(session=session, items=[(stored.job_id, [(stored.kind, {
                "delivery_id": stored.delivery_id, "attempt": stored.attempts,
                "status_code": result.status_code, "error": result.error,
                "next_attempt_at": (stored.next_attempt_at.isoformat()
                                    if stored.next_attempt_at else None)})])
                for stored, (_, result) in zip(recorded, done, strict=True)])
    raise AssertionError("unreachable")  # pragma: no cover


def _signalled(client: redis.Redis) -> bool:
    try:
        return outbox.signalled(client)
    except redis.RedisError:
        return True  # the store says what is due; look


class Drainer:
    """One run of the drainer: claim, send, record, until nothing is due or in flight."""

    def __init__(self, rt: Resources, app: Celery) -> None:
        self.rt, self.app = rt, app
        self.window = rt.settings.callback.concurrency
        self.sending: Sending = {}
        self.started = self.held = self.looked = time.monotonic()
        self.look = True  # the first look always claims
        self.sent = 0

    def run(self) -> int:
        """Drain; how many attempts were made."""
        outbox.hold(self.rt.redis, self.rt.runner)
        while True:
            now = time.monotonic()
            self._keep_hold(now)
            stopping = now - self.started > MAX_DRAIN_SECONDS or shutting_down.is_set()
            if not stopping and len(self.sending) < self.window and (
                    self.look or now - self.looked > LOOK_SECONDS or _signalled(self.rt.redis)):
                self._claim_more(now)
            if self.sending:
                self._collect()
            elif stopping:
                return self._hand_over()
            elif not self.look:
                if not outbox.let_go(self.rt.redis):
                    return self.sent
                self.look = True  # said due while it let go: look again

    def _keep_hold(self, now: float) -> None:
        if now - self.held > outbox.HOLD_SECONDS / 3:
            # On a Redis error: the sweeper wakes a drainer if this one is taken for gone.
            with contextlib.suppress(redis.RedisError):
                outbox.hold(self.rt.redis, self.rt.runner)
            self.held = now

    def _claim_more(self, now: float) -> None:
        room = self.window - len(self.sending)
        claimed = _claim(self.rt, room)
        self.look, self.looked = len(claimed) == room, now  # a full batch: more may be due
        executor = _senders(self.window)
        for delivery, secrets in claimed:
            self.sending[executor.submit(_attempt, self.rt, delivery, secrets)] = delivery

    def _collect(self) -> None:
        """Record the attempts that ended (waiting a moment for one)."""
        done, _ = wait(self.sending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        if not done:
            return
        finished = [(self.sending.pop(future), future.result()) for future in done]
        publish(self.rt.redis, _record(self.rt, finished))
        self.sent += len(finished)

    def _hand_over(self) -> int:
        """After `MAX_DRAIN_SECONDS`, or when its worker stops: let the key go and wake a fresh
        drain task (a task never runs for ever, and another worker goes on)."""
        self.rt.redis.delete(outbox.DRAINER)
        outbox.wake(self.app, self.rt.redis)
        return self.sent


def drain(rt: Resources, app: Celery) -> int:
    """Send every due delivery, `CALLBACK_CONCURRENCY` at a time; how many attempts."""
    sent = Drainer(rt, app).run()
    log.info("callbacks: %d attempt(s) sent", sent)
    return sent


@celery_app.task(name=outbox.DRAIN_TASK)
def deliver(delivery_id: str | None = None) -> int:
    """Drain the due deliveries (`delivery_id`, sent by older versions, is one of them)."""
    return drain(resources(), celery_app)
