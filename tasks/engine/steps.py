"""One step task per pool: `tasks.<pool>.step` runs any intent of that pool.

The task only names the step (job id, index); the base class reads the rest from the ledger
and calls the intent's handler from the registry, so intents from any provider run without a
Celery task of their own.
"""

from typing import Any

from celery import Task

from tasks.engine.app import celery_app
from tasks.engine.base import StepTask
from tasks.engine.chain import step_task_name
from tasks.engine.pools import POOLS


def _define(pool: str) -> Task:
    def step(job_id: str, index: int, **_: Any) -> None:
        """Run step `index` of job `job_id` (the base class does the work)."""

    return celery_app.task(base=StepTask, name=step_task_name(pool))(step)


STEP_TASKS = {pool: _define(pool) for pool in POOLS}
