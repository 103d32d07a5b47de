"""Waking the callbacks pool: the store is the outbox; Redis only says "look again".

A job's callback is a row in the store, due at once (or later, on a retry's schedule). One
drainer at a time (`tasks.callbacks.drain`) claims due rows in batches and keeps up to
`CALLBACK_CONCURRENCY` attempts in flight; it holds the `DRAINER` key while it runs.

- Whoever commits a due delivery (a job's end, a redelivery, the sweeper) calls `wake`: it
  raises the `SIGNAL` count and, if no drainer holds the key, takes it and sends one drain task.
  So a burst of ten thousand callbacks costs one task message, not ten thousand.
- The drainer reads and clears `SIGNAL` before each claim it would otherwise skip; when it has
  nothing in flight and nothing due it lets the key go and looks at `SIGNAL` once more, so a
  delivery committed in between is never left waiting for a wake that was not sent.
- A drainer that dies leaves its key to expire (`HOLD_SECONDS`); its claimed rows' leases
  expire and the sweeper, which wakes a drainer whenever rows are due, sends them again.
"""

import redis
from celery import Celery

from core.models import PoolName
from tasks.engine.pools import POOLS

DRAIN_TASK = "tasks.callbacks.deliver"
DRAINER = "orch:callbacks:drainer"
SIGNAL = "orch:callbacks:due"
HOLD_SECONDS = 10
SIGNAL_SECONDS = 60


def wake(app: Celery, client: redis.Redis) -> bool:
    """Say deliveries are due; send a drain task unless a drainer runs. Whether one was sent."""
    pipe = client.pipeline(transaction=False)
    pipe.incr(SIGNAL)
    pipe.expire(SIGNAL, SIGNAL_SECONDS)
    pipe.set(DRAINER, "waking", nx=True, ex=HOLD_SECONDS)
    taken = pipe.execute()[2]
    if taken:
        app.send_task(DRAIN_TASK, queue=POOLS[PoolName.callbacks].queue)
    return bool(taken)


def hold(client: redis.Redis, drainer: str) -> None:
    """Keep the drainer's key while it runs (called at least every `HOLD_SECONDS` / 3)."""
    client.set(DRAINER, drainer, ex=HOLD_SECONDS)


def signalled(client: redis.Redis) -> bool:
    """Whether deliveries were said to be due since the last look (and clear the count)."""
    return int(client.getdel(SIGNAL) or 0) > 0


def let_go(client: redis.Redis) -> bool:
    """Release the key as the drainer stops; True if it must go on after all (deliveries were
    said due meanwhile and it took the key back)."""
    client.delete(DRAINER)
    if not signalled(client):
        return False
    return bool(client.set(DRAINER, "draining", nx=True, ex=HOLD_SECONDS))
