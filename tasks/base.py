"""The base of every step task: obey the verdict the prerun signal took from the ledger."""

from typing import Any

from celery import Task
from celery.exceptions import Ignore

from core.store import StepStart, StepVerdict
from workers.signals import record_success

RECORD_RETRY_SECONDS = 3
RECORD_RETRIES = 20


class StepTask(Task):  # type: ignore[misc]
    """A chain step called as `task(job_id=…, index=…, inputs=…)`."""

    acks_late = True
    reject_on_worker_lost = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start: StepStart | None = getattr(self.request, "orch_start", None)
        if start is None:
            # The prerun signal could not record the start (its error is in the worker log):
            # a step never runs unrecorded, so try again once the store answers.
            raise self.retry(countdown=RECORD_RETRY_SECONDS, max_retries=RECORD_RETRIES)
        if start.verdict == StepVerdict.skip:
            raise Ignore(start.reason)
        if start.verdict == StepVerdict.done:
            return start.output
        output = self.run(*args, **kwargs)
        record_success(self, output)
        return output
