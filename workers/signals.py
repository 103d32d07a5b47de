"""Worker signals: per-process resources and the pools' liveness heartbeat.

The step lifecycle is not here: it lives in the step task base class (`tasks/base.py`).
"""

import threading
from typing import Any

from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from tasks import mcp
from tasks.engine import heartbeat
from tasks.engine.pools import POOLS
from tasks.engine.resources import close_resources, open_resources, resources

_background: list[threading.Event] = []


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
    _background.append(heartbeat.start(rt.settings.broker.url, pools, sender.hostname,
                                       rt.settings.worker.heartbeat_seconds))
    if POOLS["tools"].queue in pools:
        # MCP tools are discovered where they run; off the main thread, so a slow server
        # does not hold the worker back.
        threading.Thread(target=mcp.discover, args=(rt.redis, rt.settings.mcp),
                         name="orch-mcp-discovery", daemon=True).start()


@worker_shutdown.connect
def _stop_background(**_: Any) -> None:
    for stop in _background:
        stop.set()
    close_resources()
