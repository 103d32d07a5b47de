"""Worker signals: every step's start, success, retry and failure recorded once, here."""

import logging
import threading
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, Reject
from celery.signals import (
    task_failure,
    task_prerun,
    task_retry,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from core import store
from core.events import LiveEvent, publish
from tasks.chain import send_deliveries
from workers import heartbeat, sweeper
from workers.pools import POOLS
from workers.runtime import close_runtime, open_runtime, runtime

log = logging.getLogger(__name__)
_background: list[threading.Event] = []


def _step_of(kwargs: dict[str, Any] | None) -> tuple[str, int] | None:
    if not kwargs or "job_id" not in kwargs or "index" not in kwargs:
        return None
    return str(kwargs["job_id"]), int(kwargs["index"])


def _publish(app: Celery, events: list[LiveEvent]) -> None:
    publish(runtime().redis, events)
    send_deliveries(app, events)


@worker_process_init.connect
def _open(**_: Any) -> None:
    open_runtime()


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    close_runtime()


@worker_ready.connect
def _start_background(sender: Any, **_: Any) -> None:
    rt = runtime()
    pools = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    _background.append(heartbeat.start(rt.settings.broker.url, pools, sender.hostname,
                                       rt.settings.worker.heartbeat_seconds))
    if POOLS["callbacks"].queue in pools:
        _background.append(sweeper.start(rt, sender.app))


@worker_shutdown.connect
def _stop_background(**_: Any) -> None:
    for stop in _background:
        stop.set()


@task_prerun.connect
def _begin(task: Task, kwargs: dict[str, Any], **_: Any) -> None:
    step = _step_of(kwargs)
    if step is None:
        return
    rt = runtime()
    with rt.db.write() as session:
        start = store.begin_step(session=session, job_id=step[0], index=step[1],
                                 max_deliveries=rt.settings.orchestrator.max_step_deliveries,
                                 retries=task.request.retries or 0)
    task.request.orch_start = start
    _publish(task.app, start.events)


def record_success(task: Task, result: Any) -> None:
    """Record a step's output (finalizing the job after its last step).

    Called by the step task itself as it returns, not from `task_success`: Celery sends the
    chain's next step before that signal fires, and a crash in between would leave a finished
    step unrecorded and run it again on redelivery.
    """
    job_id, index = task.request.kwargs["job_id"], int(task.request.kwargs["index"])
    with runtime().db.write() as session:
        events = store.finish_step(session=session, job_id=job_id, index=index, output=result)
    _publish(task.app, events)


@task_retry.connect
def _retrying(sender: Task, request: Any, reason: Any, **_: Any) -> None:
    step = _step_of(request.kwargs)
    if step is None:
        return
    with runtime().db.write() as session:
        events = store.retry_step(session=session, job_id=step[0], index=step[1],
                                  reason=str(reason))
    _publish(sender.app, events)


@task_failure.connect
def _fail(sender: Task, exception: BaseException, kwargs: dict[str, Any], **_: Any) -> None:
    step = _step_of(kwargs)
    if step is None or isinstance(exception, Ignore | Reject):
        return
    error = f"{type(exception).__name__}: {exception}"
    with runtime().db.write() as session:
        events = store.fail_step(session=session, job_id=step[0], index=step[1], error=error)
    _publish(sender.app, events)
