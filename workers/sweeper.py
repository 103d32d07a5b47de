"""The sweeper process (`orchestrator sweeper`): sends what the job store says is due.

- callback deliveries that are due (retries wait in the store, not in Celery countdowns);
- jobs with no message in the broker that anything will deliver or run (the API died before
  enqueueing, a worker was killed as it took the message, a hand-off failed, a message left
  unacknowledged by a dead worker or on a connection lost in a broker outage): their first
  unfinished step is sent again;
- steps whose worker process stopped beating: sent again, and taken over by the new delivery;
  those it had received but not started (pending, so no runner in the ledger) too;
- held and waiting steps past their deadline: failed;
- concurrency slots held by dead runners: freed; steps waiting for a slot of a limit with room
  (a re-offer that failed): offered again.

Any number may run; a Redis lock lets one sweep at a time.
"""

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from sqlalchemy.exc import SQLAlchemyError

from core import deliveries
from core.errors import NotFound
from core.store.recovery import (
    expired_steps,
    quiet_jobs,
    requeue_held,
    requeue_orphan,
    resume,
    running_steps,
)
from core.store.tables import Handoff
from core.store.waits import expire_step
from tasks.engine import heartbeat, slots
from tasks.engine.admission import free_slot
from tasks.engine.chain import hand_off
from tasks.engine.resources import Resources, open_resources
from workers import inflight

log = logging.getLogger(__name__)
LOCK = "orch:sweeper"
BATCH = 200


def sweep(rt: Resources, app: Celery) -> int:
    """Wake the callbacks drainer when deliveries are due; returns how many (up to BATCH)."""
    with rt.db.write() as session:
        due = deliveries.due(session=session, limit=BATCH)
    if due:
        hand_off(app, rt.redis, Handoff(deliveries_due=True))
    return len(due)


@dataclass
class LostJobs:
    """Finds jobs whose message is gone and sends their first unfinished step again.

    A job is taken only when it has been quiet for `ORCHESTRATOR_LOST_AFTER` and the broker had
    no message of it at two checks in a row, so a message moving between a queue and a worker
    is never mistaken for a lost one. Checks run every third of that time.
    """

    suspects: set[str] = field(default_factory=set)
    next_check: float = 0.0

    def check(self, rt: Resources, app: Celery) -> int:
        """Resume the jobs confirmed lost; returns how many."""
        now, quiet = time.monotonic(), rt.settings.orchestrator.lost_after
        if now < self.next_check:
            return 0
        self.next_check = now + quiet / 3
        with rt.db.read() as session:
            candidates = quiet_jobs(session=session, older_than=quiet, limit=BATCH)
        live = heartbeat.live_runners(rt.redis, rt.settings.worker.lost_after)
        held = heartbeat.held_by(rt.redis, live)
        missing = set(candidates) - inflight.jobs_in_broker(rt.redis, candidates, held)
        missing -= slots.throttled_jobs(rt.redis)  # waiting for a slot: no message by design
        confirmed, self.suspects = missing & self.suspects, missing - self.suspects
        for job_id in confirmed:
            with rt.db.write() as session:
                taken = resume(session=session, job_id=job_id, quiet_for=quiet)
            if taken.send is not None:
                log.warning("job %s had no message in the broker; sending step %d again",
                            job_id, taken.send.index)
            hand_off(app, rt.redis, taken)
        return len(confirmed)


def orphans(rt: Resources, app: Celery) -> int:
    """Send again the running steps whose worker process stopped beating; returns how many."""
    worker = rt.settings.worker
    with rt.db.read() as session:
        running = running_steps(session=session, started_before=worker.heartbeat_seconds,
                                      limit=BATCH)
    if not running:
        return 0
    live = heartbeat.live_runners(rt.redis, worker.lost_after)
    count = 0
    for orphan in running:
        if orphan.runner in live:
            continue
        with rt.db.write() as session:
            taken = requeue_orphan(session=session, orphan=orphan)
        if taken.send is not None:
            log.warning("step %d of job %s: its worker %s stopped; sending it again",
                        orphan.index, orphan.job_id, orphan.runner)
            count += 1
        hand_off(app, rt.redis, taken)
    return count


def abandoned(rt: Resources, app: Celery) -> int:
    """Send again the pending steps whose message a dead worker held; returns how many.

    The broker would give such a message back only after its visibility timeout: it sits in
    the unacknowledged index, where a dead worker's message looks like a live one's. Once sent
    again, the old message is a duplicate the ledger skips whenever it comes back.
    """
    count = 0
    for runner in heartbeat.dead_runners(rt.redis, rt.settings.worker.lost_after):
        held = heartbeat.held_by(rt.redis, [runner])
        count += sum(_requeue_held(rt, app, runner, task_id) for task_id in held)
        heartbeat.release(rt.redis, runner, held)
    return count


def _requeue_held(rt: Resources, app: Celery, runner: str, task_id: str) -> bool:
    job_id, index = task_id.rsplit("-", 1)
    try:
        with rt.db.write() as session:
            taken = requeue_held(session=session, job_id=job_id, index=int(index),
                                       runner=runner)
    except NotFound:
        return False  # not a step of this job store
    if taken.send is not None:
        log.warning("step %s of job %s: its worker %s stopped before its start was written; "
                    "sending it again", index, job_id, runner)
    hand_off(app, rt.redis, taken)
    return taken.send is not None


@dataclass
class Slots:
    """Frees the concurrency slots of dead runners (after `WORKER_LOST_AFTER` without a
    heartbeat) and offers waiting steps to limits with room, every third of
    `ORCHESTRATOR_LOST_AFTER`: a safety net, since a step's end offers the next itself."""

    next_check: float = 0.0

    def check(self, rt: Resources, app: Celery) -> int:
        """Free and offer; returns how many slots were reclaimed."""
        now = time.monotonic()
        if now < self.next_check:
            return 0
        self.next_check = now + rt.settings.orchestrator.lost_after / 3
        live = set(heartbeat.live_runners(rt.redis, rt.settings.worker.lost_after))
        reclaimed = 0
        for key in slots.limits(rt.redis):
            for member, runner in slots.holders(rt.redis, key).items():
                if runner not in live:
                    job_id, index = member.rsplit("-", 1)
                    log.warning("step %s of job %s: its worker %s stopped; its slot of a "
                                "concurrency limit is free", index, job_id, runner)
                    free_slot(app, rt.redis, key, job_id, int(index))
                    reclaimed += 1
            free_slot(app, rt.redis, key)
        return reclaimed


def expired(rt: Resources, app: Celery) -> int:
    """Fail the held and waiting steps past their deadline; returns how many."""
    with rt.db.read() as session:
        steps = expired_steps(session=session, limit=BATCH)
    for job_id, index in steps:
        with rt.db.write() as session:
            taken = expire_step(session=session, job_id=job_id, index=index)
        hand_off(app, rt.redis, taken)
    return len(steps)


@dataclass
class Sweeper:
    """One sweeper's state between rounds."""

    rt: Resources
    app: Celery
    lost: LostJobs = field(default_factory=LostJobs)
    slots: Slots = field(default_factory=Slots)
    broker_ok_since: float = field(default_factory=time.monotonic)

    def round(self) -> None:
        """One round, if this sweeper holds the lock."""
        every = self.rt.settings.callback.sweep_seconds
        try:
            if not self.rt.redis.set(LOCK, b"1", nx=True, px=int(every * 1000)):
                return
            sweep(self.rt, self.app)
            expired(self.rt, self.app)
            # After a broker outage, heartbeats need time to come back before a quiet worker
            # can be told from a dead one, and a running step's message from a lost one.
            if time.monotonic() - self.broker_ok_since > self.rt.settings.worker.lost_after:
                self.lost.check(self.rt, self.app)
                orphans(self.rt, self.app)
                abandoned(self.rt, self.app)
                self.slots.check(self.rt, self.app)
        except (redis.RedisError, OperationalError) as exc:
            self.broker_ok_since = time.monotonic()
            log.warning("sweep skipped: broker unavailable (%s)", exc)
        except SQLAlchemyError as exc:
            log.warning("sweep skipped: job store error (%s)", type(exc).__name__)


def run() -> None:
    """Sweep every `CALLBACK_SWEEP_SECONDS` until SIGTERM or SIGINT."""
    from core.logformat import configure, quiet_libraries
    from core.settings import get_settings
    from tasks.engine.app import celery_app

    if get_settings().log.format == "json":
        configure("json")
    else:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s sweeper %(message)s")
        quiet_libraries()
    rt = open_resources(runner=False)
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sweeper = Sweeper(rt, celery_app)
    log.info("sweeping every %gs", rt.settings.callback.sweep_seconds)
    while not stop.wait(rt.settings.callback.sweep_seconds):
        sweeper.round()
    rt.close()
