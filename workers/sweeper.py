"""The sweeper: sends what the job store says is due and the broker does not have.

Callback deliveries that are due (retries, missed hand-offs, attempts of lost workers): retries
wait in the job store, not in long Celery countdowns that could outlive the broker's visibility
timeout. And jobs committed but never enqueued (the API died in between). One sweep at a time
runs, by a Redis lock, from the workers of the `callbacks` pool.
"""

import logging
import threading

import redis
from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from core import deliveries, store
from core.events import publish
from tasks.chain import DELIVER_TASK, enqueue
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


def requeue_stranded(rt: Runtime, app: Celery) -> int:
    """Enqueue jobs that were committed but never enqueued; returns how many."""
    with rt.db.read() as session:
        stranded = store.stranded_jobs(session=session,
                                       older_than=rt.settings.orchestrator.enqueue_grace,
                                       limit=BATCH)
    for job_id in stranded:
        with rt.db.write() as session:
            steps, events = store.requeue(session=session, job_id=job_id)
        if steps:
            enqueue(app, job_id, steps)
            publish(rt.redis, events)
    return len(stranded)


def start(rt: Runtime, app: Celery) -> threading.Event:
    """Sweep every `CALLBACK_SWEEP_SECONDS` in a daemon thread until the event is set."""
    stop = threading.Event()
    every = rt.settings.callback.sweep_seconds

    def loop() -> None:
        while not stop.wait(every):
            try:
                if rt.redis.set(LOCK, b"1", nx=True, px=int(every * 1000)):
                    sweep(rt, app)
                    requeue_stranded(rt, app)
            except (redis.RedisError, SQLAlchemyError) as exc:
                log.warning("sweep skipped: %s", exc)

    threading.Thread(target=loop, name="orch-sweeper", daemon=True).start()
    return stop
