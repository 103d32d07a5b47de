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
from kombu.exceptions import BatchPublishError

from core.events import LiveEvent, publish
from core.models import EventType
from core.store.tables import Handoff, NextStep, step_task_id
from tasks.engine import outbox
from tasks.engine.pools import POOLS

SEND_PER_TRIP = 1000
"""Messages sent in one broker round trip by `send_steps` (a whole batch submission)."""


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


def send_steps(app: Celery, steps: Sequence[NextStep], per_trip: int = SEND_PER_TRIP) -> int:
    """Send many steps in order, `per_trip` messages to a broker round trip (kombu's publish
    batch: one pipeline); how many were sent before the broker failed (re-raised with it as
    `SendStopped`). A trip that failed counts as unsent: its messages may have arrived, but
    a message whose job is not in the ledger is dropped by the worker that takes it."""
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for start in range(0, len(steps), per_trip):
                trip = steps[start:start + per_trip]
                # The batch's size counts broker commands, a few per message at most: it
                # is flushed once, at the end of the trip.
                with producer.batch(max_size=4 * len(trip)):
                    for step in trip:
                        step_signature(app, step).apply_async(producer=producer)
                sent += len(trip)
    except BatchPublishError as exc:  # the broker's own error is its cause
        raise SendStopped(sent) from exc.__cause__ or exc
    except Exception as exc:
        raise SendStopped(sent) from exc
    return sent


class SendStopped(Exception):
    """Raised when the broker failed partway through `send_steps`: `sent` steps went out."""

    def __init__(self, sent: int) -> None:
        super().__init__(f"the broker failed after {sent} steps were sent")
        self.sent = sent


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
