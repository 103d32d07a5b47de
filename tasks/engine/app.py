"""The one Celery app: JSON only, late acks, a queue per pool, routing by task module."""

import threading
import time
from typing import Any

from celery import Celery
from celery.signals import before_task_publish, worker_shutting_down
from kombu.entity import Exchange, Queue

from core.models import PoolName
from core.observations import SENT_HEADER
from core.settings import get_settings

# Outlive a broker outage; Flower events of ignored steps; quiet logs.
from tasks.engine import acks, broker_clients, broker_loss, events, logs  # noqa: F401
from tasks.engine.pools import POOLS, Pool

# Imported by each worker at start: the step tasks, the callback task and every intent family.
TASK_MODULES = ["tasks.engine.steps", "tasks.callbacks", "tasks.intents"]
BROKER_POOL_LIMIT = 100


def pool_queue(pool: Pool) -> Queue:
    """A pool's queue on its own direct exchange, so a message reaches that queue alone."""
    return Queue(pool.queue, Exchange(pool.queue, type="direct"), routing_key=pool.queue)


def create_celery() -> Celery:
    """Build the Celery app from settings; nothing connects until a task is sent or consumed."""
    settings = get_settings()
    app = Celery("orchestrator", broker=settings.broker.url, include=TASK_MODULES)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=settings.worker.send_events,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # Reconnect for as long as the broker is away: Celery's default of 100 tries (kombu
        # waits 2, 4, … 30 s between them) makes a worker exit after 46 minutes of outage.
        broker_connection_max_retries=None,
        broker_pool_limit=BROKER_POOL_LIMIT,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options={
            "visibility_timeout": settings.broker.visibility_timeout,
            "unacked_restore_interval": settings.broker.restore_interval,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": settings.broker.restore_lock_seconds,
        },
        task_queues=[pool_queue(pool) for pool in POOLS.values()],
        task_default_queue=PoolName.tools.value,
        task_routes={f"tasks.{name}.*": {"queue": pool.queue} for name, pool in POOLS.items()},
        task_soft_time_limit=settings.pool.soft_time_limit,
        task_time_limit=settings.pool.time_limit,
        enable_utc=True,
    )
    return app


shutting_down = threading.Event()
"""Set once this worker is told to stop: a run that could go on (the callbacks drainer, a step
task continuing a chain) hands its work over as a message instead, not making the warm
shutdown wait."""


@worker_shutting_down.connect
def _shutting_down(**_: object) -> None:
    shutting_down.set()


@before_task_publish.connect
def _stamp_sent(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Every message carries the time it was sent: `/metrics` tells the oldest one's age."""
    if headers is not None:
        headers.setdefault(SENT_HEADER, time.time())


celery_app = create_celery()
