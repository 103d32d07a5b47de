"""Late acks sent together, once per turn of the worker's event loop.

Celery runs a step's late ack on the consumer's event loop (kombu's connection is not
thread-safe), and with kombu's Redis transport each ack is a round trip (`MULTI`, `ZREM`,
`HDEL`, `EXEC`) made by the thread that also receives messages: when hundreds of steps end at
once, that thread acknowledges them one by one. The acks asked for in one turn are sent at the
end of that turn, before the loop polls again, as one transaction whatever their number: the
same four commands for one message or five hundred.

An ack asked for on another thread, or outside a worker's loop, is sent at once, as kombu would.
An ack not yet sent when the worker dies leaves its message in the unacknowledged index, as a
death just before the ack would: its redelivery finds the step ended (`broker_loss`). A channel
closing sends its pending acks before it puts back what it still holds.
"""

import contextlib
import threading
from typing import Any

from kombu.asynchronous import get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from tasks.engine.broker_loss import GONE, detached, let_go

_pending: dict[Any, list[str]] = {}  # QoS → delivery tags; touched by the loop's thread only


def ack_soon(qos: Any, delivery_tag: str) -> None:
    """kombu's `QoS.ack`: queued for the end of this turn on the loop's thread, else sent."""
    hub = get_event_loop()
    if hub is None or threading.current_thread() is not threading.main_thread():
        return send(qos, [delivery_tag])
    if send_pending not in hub.on_tick:
        hub.on_tick.add(send_pending)
    _pending.setdefault(qos, []).append(delivery_tag)


def send_pending() -> None:
    """Send every channel's queued acks, one transaction each (the loop's tick)."""
    while _pending:
        qos, tags = _pending.popitem()
        send(qos, tags)


def send(qos: Any, tags: list[str]) -> None:
    """Remove `tags` from the unacknowledged index in one transaction; on a channel closed with
    a lost connection, let them go (`broker_loss`)."""
    if detached(qos):
        return _let_go_all(qos, tags, None)
    try:
        with qos.pipe_or_acquire() as pipe:
            pipe.zrem(qos.unacked_index_key, *tags).hdel(qos.unacked_key, *tags).execute()
    except GONE as exc:
        if not detached(qos):
            raise
        return _let_go_all(qos, tags, exc)
    for tag in tags:
        virtual.QoS.ack(qos, tag)  # type: ignore[no-untyped-call]


def _let_go_all(qos: Any, tags: list[str], exc: Exception | None) -> None:
    for tag in tags:
        let_go(qos, "acknowledge", tag, exc)


_restore = kombu_redis.QoS.restore_unacked  # `broker_loss`'s: it lets go on a lost broker


def send_then_restore(qos: Any, client: Any = None) -> None:
    """kombu's `QoS.restore_unacked` (a channel closing): its queued acks are sent first, so
    the messages of steps that ended are not put back on the queue."""
    tags = _pending.pop(qos, None) if threading.current_thread() is threading.main_thread() \
        else None
    if tags:
        with contextlib.suppress(*GONE):
            send(qos, tags)
    _restore(qos, client)  # type: ignore[no-untyped-call]


kombu_redis.QoS.ack = ack_soon  # type: ignore[method-assign]
kombu_redis.QoS.restore_unacked = send_then_restore  # type: ignore[method-assign]
