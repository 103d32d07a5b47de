"""A worker must outlive a broker outage of any length, even holding unacknowledged messages.

When the connection to Redis drops, kombu closes the channel, first trying to put the messages
the worker holds back on their queues, and detaches the channel from its connection. Two
calls then meet a channel without a connection, fail inside kombu with an `AttributeError`
(`'NoneType' object has no attribute 'hostname'` / `'client'`), which Celery treats as
unrecoverable: the whole worker exits.

- the restore at close (seen with a step waiting on a retry countdown during a 15 s restart);
- the ack (sent by `acks`, with the helpers here) or reject of a message that channel
  delivered, for a step that ended while the broker was away: Celery runs it on its event
  loop as soon as the worker has reconnected, so the worker dies right after the broker comes
  back (seen after an 11-minute outage; any outage a held step outlives does it).

Neither needs the dead channel: the message stays in the broker's unacknowledged index, the
broker puts it back once the visibility timeout has passed, and its redelivery finds the step
already ended in the ledger (the sweeper sends the steps of a job whose message is gone). So
each is logged and let go, and the worker carries on with its new connection.
"""

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)
_restore = kombu_redis.QoS.restore_unacked
_reject = kombu_redis.QoS.reject
GONE = (AttributeError, redis.RedisError, OSError)


def _restore_or_let_go(self: Any, client: Any = None) -> None:
    try:
        _restore(self, client)  # type: ignore[no-untyped-call]
    except GONE as exc:
        log.warning("could not put %d unacknowledged message(s) back: the broker is gone "
                    "(%s); the broker's unacked index and the sweeper bring them back",
                    len(self._delivered), type(exc).__name__)
        self._delivered.clear()


def detached(qos: Any) -> bool:
    """Whether the channel that delivered the message was closed with a lost connection."""
    return qos.channel.connection is None


def let_go(qos: Any, what: str, delivery_tag: str, exc: Exception | None) -> None:
    reason = type(exc).__name__ if exc else "its channel closed with the lost connection"
    log.warning("could not %s message %s (%s); it stays in the broker's unacked index until "
                "the visibility timeout, and its redelivery finds the step ended",
                what, delivery_tag, reason)
    qos._delivered.pop(delivery_tag, None)


def _reject_or_let_go(self: Any, delivery_tag: str, requeue: bool = False) -> None:
    if detached(self):
        return let_go(self, "reject", delivery_tag, None)
    try:
        _reject(self, delivery_tag, requeue)  # type: ignore[no-untyped-call]
    except GONE as exc:
        if not detached(self):
            raise
        let_go(self, "reject", delivery_tag, exc)


kombu_redis.QoS.restore_unacked = _restore_or_let_go  # type: ignore[method-assign]
kombu_redis.QoS.reject = _reject_or_let_go  # type: ignore[method-assign]
