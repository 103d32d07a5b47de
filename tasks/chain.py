"""The chain builder: a job's planned steps become one Celery chain of immutable signatures."""

from collections.abc import Sequence

from celery import Celery, chain
from celery.canvas import Signature

from core.events import LiveEvent
from core.store import NewStep, step_task_id
from workers.pools import POOLS

DELIVER_TASK = "tasks.callbacks.deliver"


def step_signature(app: Celery, job_id: str, index: int, step: NewStep) -> Signature:
    """A step's signature: routed to its pool's queue, with a task id derived from the job."""
    return app.signature(
        step.task,
        kwargs={"job_id": job_id, "index": index, "inputs": step.inputs},
        immutable=True,
        task_id=step_task_id(job_id, index),
        queue=POOLS[step.pool].queue,
    )


def build_chain(app: Celery, job_id: str, steps: Sequence[NewStep], start: int = 0) -> Signature:
    """The job's chain: one signature per step, in order, the first being step `start`."""
    signatures = [step_signature(app, job_id, index, step)
                  for index, step in enumerate(steps, start=start)]
    return signatures[0] if len(signatures) == 1 else chain(*signatures)


def enqueue(app: Celery, job_id: str, steps: Sequence[NewStep], start: int = 0) -> None:
    """Send the chain (or its rest, from step `start`) to the broker."""
    build_chain(app, job_id, steps, start).apply_async()


def send_deliveries(app: Celery, events: Sequence[LiveEvent]) -> None:
    """Hand the callbacks that these committed events scheduled to the callbacks pool."""
    for event in events:
        if event["type"] == "callback_scheduled":
            app.send_task(DELIVER_TASK, kwargs={"delivery_id": event["data"]["delivery_id"]},
                          queue=POOLS["callbacks"].queue)
