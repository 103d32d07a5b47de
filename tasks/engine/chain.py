"""Handing work on once a transaction has committed: publish, deliver, send the next step.

The ledger carries a job's plan; the broker carries one step at a time. Every caller that
commits a step's change (a worker, the API on submit, approve and resume, the sweeper) hands
off through `hand_off`, so "commit, then publish, then send" is written once.
"""

from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery
from celery.canvas import Signature

from core.events import LiveEvent, publish
from core.models import EventType
from core.store.tables import Handoff, NextStep, step_task_id
from tasks.engine import outbox
from tasks.engine.pools import POOLS

COMMANDS_PER_MESSAGE = 5
"""At most, for kombu's Redis transport: an `LPUSH`, and a `PEXPIRE` for each of its four
priority levels when the queue expires (so a batch is never flushed before its end)."""


def step_task_name(pool: str) -> str:
    """The Celery task that runs any step of `pool`."""
    return f"tasks.{pool}.step"


def step_signature(app: Celery, step: NextStep) -> Signature:
    """A step's message: ids only (the ledger has the rest), routed to its pool's queue."""
    return app.signature(
        step_task_name(step.pool),
        kwargs={"job_id": step.job_id, "index": step.index, "intent": step.intent},
        immutable=True,
        task_id=step_task_id(step.job_id, step.index),
        queue=POOLS[step.pool].queue,
    )


def send_step(app: Celery, step: NextStep, **options: Any) -> None:
    """Send a step's message (`options`: Celery's, e.g. a retry's `countdown` and `retries`)."""
    step_signature(app, step).apply_async(**options)


def send_steps(app: Celery, steps: Sequence[NextStep]) -> None:
    """Send many steps, in order, in one broker round trip (kombu's publish batch: one
    pipeline, flushed at the end). kombu calls the delivery of a pipeline that failed
    uncertain (`BatchPublishError`, the broker's error its cause), so a caller takes none of
    them as sent: a message that arrived all the same, whose job it then removed, is dropped
    by the worker that takes it."""
    if not steps:
        return
    with app.producer_or_acquire() as producer, \
            producer.batch(max_size=COMMANDS_PER_MESSAGE * len(steps)):
        for step in steps:
            step_signature(app, step).apply_async(producer=producer)


def wake_deliveries(app: Celery, client: redis.Redis, events: Sequence[LiveEvent],
                    due: bool) -> None:
    """Wake the callbacks drainer when these committed events scheduled a callback or others
    are `due` (the one place it is woken; the store says which are due, see `outbox`)."""
    if due or any(event["type"] == EventType.callback_scheduled for event in events):
        outbox.wake(app, client)


def hand_off(app: Celery, client: redis.Redis, handoff: Handoff) -> None:
    """After commit: announce the events, wake the callbacks drainer (if callbacks are due)
    and send the next step.

    A send that fails leaves the job quiet with no message; the sweeper sends it again.
    """
    publish(client, handoff.events)
    wake_deliveries(app, client, handoff.events, handoff.deliveries_due)
    if handoff.send is not None:
        send_step(app, handoff.send)
