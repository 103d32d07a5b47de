"""The sweeper: sends what the job store says is due and the broker does not have.

Callback deliveries that are due (retries, missed hand-offs, attempts of lost workers): retries
wait in the job store, not in long Celery countdowns that could outlive the broker's visibility
timeout. And jobs with no message in the broker (the API died before enqueueing, or a worker was
killed as it took the message): their remaining steps are sent again. One sweep at a time runs,
by a Redis lock, from the workers of the `callbacks` pool.
"""

import logging
import threading
import time
from dataclasses import dataclass, field

import redis
from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from core import deliveries, store
from core.events import publish
from tasks.chain import DELIVER_TASK, enqueue
from workers import inflight
from workers.pools import POOLS
from workers.runtime import Runtime

log = logging.getLogger(__name__)
LOCK = "orch:sweeper"
BATCH = 200


def sweep(rt: Runtime, app: Celery) -> int:
    """Send every due delivery to the callbacks pool; returns how many."""
    with rt.db.write() as session:
        due = deliveries.due(session=session, limit=BATCH)
    for delivery_id in due:
        app.send_task(DELIVER_TASK, kwargs={"delivery_id": delivery_id},
                      queue=POOLS["callbacks"].queue)
    return len(due)


@dataclass
class LostJobs:
    """Finds jobs whose message is gone and sends their remaining steps again.

    A job is taken only when it has been quiet for `ORCHESTRATOR_LOST_AFTER` and the broker had
    no message of it at two checks in a row, so a message moving between a queue and a worker
    is never mistaken for a lost one. Checks run every third of that time.
    """

    suspects: set[str] = field(default_factory=set)
    next_check: float = 0.0

    def check(self, rt: Runtime, app: Celery) -> int:
        """Resume the jobs confirmed lost; returns how many."""
        now, quiet = time.monotonic(), rt.settings.orchestrator.lost_after
        if now < self.next_check:
            return 0
        self.next_check = now + quiet / 3
        with rt.db.read() as session:
            candidates = store.quiet_jobs(session=session, older_than=quiet, limit=BATCH)
        missing = set(candidates) - inflight.jobs_in_broker(rt.redis, candidates)
        confirmed, self.suspects = missing & self.suspects, missing - self.suspects
        for job_id in confirmed:
            with rt.db.write() as session:
                taken = store.resume(session=session, job_id=job_id, quiet_for=quiet)
            if taken.steps:
                log.warning("job %s had no message in the broker; sending it again from step %d",
                            job_id, taken.start)
                enqueue(app, job_id, taken.steps, taken.start)
                publish(rt.redis, taken.events)
        return len(confirmed)


def start(rt: Runtime, app: Celery) -> threading.Event:
    """Sweep every `CALLBACK_SWEEP_SECONDS` in a daemon thread until the event is set."""
    stop = threading.Event()
    every = rt.settings.callback.sweep_seconds
    lost = LostJobs()

    def loop() -> None:
        while not stop.wait(every):
            try:
                if rt.redis.set(LOCK, b"1", nx=True, px=int(every * 1000)):
                    sweep(rt, app)
                    lost.check(rt, app)
            except (redis.RedisError, SQLAlchemyError) as exc:
                log.warning("sweep skipped: %s", exc)

    threading.Thread(target=loop, name="orch-sweeper", daemon=True).start()
    return stop
