"""A step that ends in `Ignore` (its job was cancelled, or its work was already done) sends
`task-revoked`: Celery sends no event for it, so Flower would show it STARTED forever."""

from typing import Any

from celery import Task, states
from celery.signals import task_postrun, worker_ready

_consumer: list[Any] = []  # the worker's consumer, once it is ready (its event dispatcher)


def _remember_consumer(sender: Any = None, **_: Any) -> None:
    _consumer[:] = [sender]


def task_events_on(task: Task) -> bool:
    """Whether this worker sends task events: by the setting, or since Flower (any monitor)
    asked for them with `enable_events`."""
    dispatcher = getattr(_consumer[0], "event_dispatcher", None) if _consumer else None
    if dispatcher is not None:
        return bool(dispatcher.enabled) and (dispatcher.groups is None or
                                             "task" in dispatcher.groups)
    return bool(task.app.conf.worker_send_task_events)


def _ignored_is_revoked(sender: Task | None = None, state: str | None = None,
                        **_: Any) -> None:
    if sender is not None and state == states.IGNORED and task_events_on(sender):
        sender.send_event("task-revoked", terminated=False, signum=None, expired=False)


worker_ready.connect(_remember_consumer, weak=False)
task_postrun.connect(_ignored_is_revoked, weak=False)
