"""A step that ends in `Ignore` (its job was cancelled, or its work was already done) sends
`task-revoked`: Celery sends no event for it, so Flower would show it STARTED forever."""

from typing import Any

from celery import Task, states
from celery.signals import task_postrun


def _ignored_is_revoked(sender: Task | None = None, state: str | None = None,
                        **_: Any) -> None:
    if sender is not None and state == states.IGNORED and sender.app.conf.worker_send_task_events:
        sender.send_event("task-revoked", terminated=False, signum=None, expired=False)


task_postrun.connect(_ignored_is_revoked, weak=False)
