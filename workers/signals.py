"""Worker signals: per-process resources, the pools' liveness heartbeat and the step messages
a worker holds (see `heartbeat.Holdings`).

The step lifecycle is not here: it lives in the step task base class (`tasks/base.py`).
"""

import threading
from typing import Any

from celery.signals import (
    task_received,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.worker import state
from celery.worker.control import control_command

from core.models import PoolName
from core.settings import get_settings
from core.telemetry import start_tracing, stop_tracing
from tasks import mcp
from tasks.engine import heartbeat
from tasks.engine.cancellation import UNREVOKE
from tasks.engine.pools import POOLS
from tasks.engine.resources import close_resources, open_resources, resources

_background: list[threading.Event] = []
_tracing: list[Any] = []


@worker_init.connect
def _trace(**_: Any) -> None:
    """Trace steps when OTEL_EXPORTER_OTLP_ENDPOINT is set (before the pool forks: a prefork
    child's span exporter restarts itself after the fork)."""
    _tracing.append(start_tracing(get_settings().telemetry, "worker"))


@worker_process_init.connect
def _open(**_: Any) -> None:
    open_resources()


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    close_resources()


@worker_ready.connect
def _start_background(sender: Any, **_: Any) -> None:
    rt = resources()
    pools = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    worker = rt.settings.worker
    _background.append(heartbeat.start(rt.settings.broker.url, pools, sender.hostname,
                                       worker.heartbeat_seconds))
    rt.holdings = heartbeat.Holdings(rt.redis, rt.runner,
                                     keep=worker.lost_after * heartbeat.KEEP_FACTOR)
    _background.append(heartbeat.start_holdings(rt.holdings, _held_steps,
                                                worker.heartbeat_seconds))
    if POOLS[PoolName.tools].queue in pools:
        # MCP tools are discovered where they run; off the main thread, so a slow server
        # does not hold the worker back.
        _background.append(mcp.start_discovery(rt.redis, rt.settings.mcp,
                                               worker.heartbeat_seconds))


@worker_shutdown.connect
def _stop_background(**_: Any) -> None:
    for stop in _background:
        stop.set()
    for provider in _tracing:
        stop_tracing(provider)
    holdings = resources().holdings
    if holdings is not None:
        holdings.clear()
    close_resources()


@task_received.connect
def _received(request: Any, **_: Any) -> None:
    # Published at once: a worker killed before its next beat has its messages known.
    holdings = resources().holdings
    if holdings is not None and _is_step(request):
        holdings.received(request.id)


def _is_step(request: Any) -> bool:
    return str(request.name).endswith(".step")


def _held_steps() -> set[str] | None:
    """The step messages Celery holds in this process: waiting for a slot, running, or
    scheduled for a retry countdown. None when the consumer changed them mid-read."""
    try:
        requests = [*state.reserved_requests, *state.active_requests,
                    *state.scheduled_requests]
    except RuntimeError:  # a WeakSet changed size under us; the next beat reads it again
        return None
    return {str(r.id) for r in requests if _is_step(r)}


@control_command(name=UNREVOKE, args=[("task_ids", list)], signature="<task_id> ...")
def _unrevoke(_panel: Any, task_ids: list[str]) -> dict[str, str]:
    """Forget the revokes of these step messages: a cancelled job that is retried sends its
    steps again under the same ids (Celery has no command for it)."""
    for task_id in task_ids:
        state.revoked.discard(task_id)
    return {"ok": f"{len(task_ids)} forgotten"}
