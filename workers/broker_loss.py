"""A worker must outlive a broker outage, even holding unacknowledged messages.

When the connection to Redis drops, kombu closes the channel and first tries to put the
messages the worker holds back on their queues. With the connection gone, that attempt fails
inside kombu with `AttributeError: 'NoneType' object has no attribute 'hostname'`, which Celery
treats as unrecoverable: the whole worker exits (seen with a step waiting on a retry countdown
during a 15 s Valkey restart). Those messages are not lost by skipping the restore: they stay
in the broker's unacknowledged index (redelivered after the visibility timeout), and the
sweeper sends the steps of a job whose message is gone. So a failed restore is logged and the
worker reconnects as it does for any other broker error.
"""

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)
_restore = kombu_redis.QoS.restore_unacked


def _restore_or_let_go(self: Any, client: Any = None) -> None:
    try:
        _restore(self, client)  # type: ignore[no-untyped-call]
    except (AttributeError, redis.RedisError, OSError) as exc:
        log.warning("could not put %d unacknowledged message(s) back: the broker is gone "
                    "(%s); the broker's unacked index and the sweeper bring them back",
                    len(self._delivered), type(exc).__name__)
        self._delivered.clear()


kombu_redis.QoS.restore_unacked = _restore_or_let_go  # type: ignore[method-assign]
