"""The chain builder: a job's stored steps become one Celery chain of immutable signatures."""

from celery import Celery, chain
from celery.canvas import Signature

from core.models import JobStep
from core.store import step_task_id
from workers.pools import POOLS


def step_signature(app: Celery, step: JobStep) -> Signature:
    """A step's signature: routed to its pool's queue, with a task id derived from the job."""
    return app.signature(
        step.task,
        kwargs={"job_id": step.job_id, "index": step.index, "inputs": step.inputs},
        immutable=True,
        task_id=step_task_id(step.job_id, step.index),
        queue=POOLS[step.pool].queue,
    )


def build_chain(app: Celery, steps: list[JobStep]) -> Signature:
    """The job's chain: one signature per step, in order."""
    signatures = [step_signature(app, step) for step in steps]
    return signatures[0] if len(signatures) == 1 else chain(*signatures)


def enqueue(app: Celery, steps: list[JobStep]) -> None:
    """Send the chain to the broker."""
    build_chain(app, steps).apply_async()
