"""The base of every step task: obey the verdict the prerun signal took from the ledger."""

from typing import Any

from celery import Task
from celery.exceptions import Ignore

from core.errors import UpstreamUnavailable
from core.store import StepStart, StepVerdict
from workers.runtime import runtime
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
        try:
            output = self.run(*args, **kwargs)
        except UpstreamUnavailable as exc:
            # Fail fast now, try again when the breaker lets a call through: no retry is spent
            # against an upstream that is known to be down.
            raise self.retry(exc=exc, countdown=exc.retry_after,
                             max_retries=self._upstream_retries()) from exc
        record_success(self, output)
        return output

    def _upstream_retries(self) -> int:
        return runtime().settings.orchestrator.upstream_retries
