"""Worker signals: every step's start, success, retry and failure recorded once, here."""

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject
from celery.signals import (
    task_failure,
    task_prerun,
    task_retry,
    task_success,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from core import store
from core.events import LiveEvent, publish
from core.store import StepStart, StepVerdict
from workers import heartbeat
from workers.runtime import close_runtime, open_runtime, runtime

log = logging.getLogger(__name__)
_beat: Any = None


def _step_of(kwargs: dict[str, Any] | None) -> tuple[str, int] | None:
    if not kwargs or "job_id" not in kwargs or "index" not in kwargs:
        return None
    return str(kwargs["job_id"]), int(kwargs["index"])


def _publish(events: list[LiveEvent]) -> None:
    publish(runtime().redis, events)


@worker_process_init.connect
def _open(**_: Any) -> None:
    open_runtime()


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    close_runtime()


@worker_ready.connect
def _start_heartbeat(sender: Any, **_: Any) -> None:
    global _beat
    settings = runtime().settings
    pools = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    _beat = heartbeat.start(settings.broker.url, pools, sender.hostname,
                            settings.worker.heartbeat_seconds)


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _beat is not None:
        _beat.set()


@task_prerun.connect
def _begin(task: Task, kwargs: dict[str, Any], **_: Any) -> None:
    step = _step_of(kwargs)
    if step is None:
        return
    rt = runtime()
    with rt.db.write() as session:
        start = store.begin_step(session=session, job_id=step[0], index=step[1],
                                 max_deliveries=rt.settings.orchestrator.max_step_deliveries)
    task.request.orch_start = start
    _publish(start.events)


@task_success.connect
def _succeed(sender: Task, result: Any, **_: Any) -> None:
    step = _step_of(sender.request.kwargs)
    start: StepStart | None = getattr(sender.request, "orch_start", None)
    if step is None or start is None or start.verdict == StepVerdict.skip:
        return
    with runtime().db.write() as session:
        events = store.finish_step(session=session, job_id=step[0], index=step[1], output=result)
    _publish(events)


@task_retry.connect
def _retrying(request: Any, reason: Any, **_: Any) -> None:
    step = _step_of(request.kwargs)
    if step is None:
        return
    with runtime().db.write() as session:
        events = store.retry_step(session=session, job_id=step[0], index=step[1],
                                  reason=str(reason))
    _publish(events)


@task_failure.connect
def _fail(sender: Task, exception: BaseException, kwargs: dict[str, Any], **_: Any) -> None:
    step = _step_of(kwargs)
    if step is None or isinstance(exception, Ignore | Reject):
        return
    error = f"{type(exception).__name__}: {exception}"
    with runtime().db.write() as session:
        events = store.fail_step(session=session, job_id=step[0], index=step[1], error=error)
    _publish(events)
