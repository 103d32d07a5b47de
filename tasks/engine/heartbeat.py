"""Worker liveness in Redis: each worker stamps the pools it consumes; `/ready` reads them."""

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable

import redis

KEY = "orch:workers:{pool}"


def stamp(client: redis.Redis, pools: list[str], hostname: str, ttl: float) -> None:
    """Record that `hostname` is consuming `pools` now; stale entries are trimmed."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for pool in pools:
        key = KEY.format(pool=pool)
        pipe.zadd(key, {hostname: now})
        pipe.zremrangebyscore(key, 0, now - ttl)
        pipe.expire(key, int(ttl) + 1)
    pipe.execute()


def live_workers(client: redis.Redis, pool: str, ttl: float) -> list[str]:
    """Hostnames that stamped `pool` within the last `ttl` seconds."""
    members = client.zrangebyscore(KEY.format(pool=pool), time.time() - ttl, "+inf")
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]


def start(url: str, pools: list[str], hostname: str, every: float) -> threading.Event:
    """Stamp every `every` seconds in a daemon thread until the returned event is set."""
    stop = threading.Event()
    client = redis.Redis.from_url(url)

    def beat() -> None:
        while not stop.is_set():
            # A broker outage only skips beats; the worker stamps again once it is back.
            with contextlib.suppress(redis.RedisError):
                stamp(client, pools, hostname, ttl=every * 3)
            stop.wait(every)

    threading.Thread(target=beat, name="orch-heartbeat", daemon=True).start()
    return stop


# --- runners: every process that runs steps, so a dead one's steps can be sent again ---------

RUNNERS = "orch:runners"
KEEP_FACTOR = 10
"""A runner is remembered `KEEP_FACTOR` × its lost-after time after its last beat."""


def runner_id() -> str:
    """This process as the ledger records it: host, pid and a token of this start.

    Host and pid alone do not name a process: a container's worker is pid 1 on the same host
    name after every restart, and would be taken for the dead one it replaces (whose running
    steps would then never be sent again)."""
    return f"{socket.gethostname()}:{os.getpid()}/{secrets.token_hex(3)}"


def stamp_runner(client: redis.Redis, runner: str, keep: float) -> None:
    """Record that `runner` is alive now; entries older than `keep` seconds are trimmed."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(RUNNERS, {runner: now})
    pipe.zremrangebyscore(RUNNERS, 0, now - keep)
    pipe.execute()


def live_runners(client: redis.Redis, lost_after: float) -> set[str]:
    """Runners that stamped within the last `lost_after` seconds."""
    members = client.zrangebyscore(RUNNERS, time.time() - lost_after, "+inf")
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}


def runner_alive(client: redis.Redis, runner: str, lost_after: float) -> bool:
    score = client.zscore(RUNNERS, runner)
    return score is not None and float(score) > time.time() - lost_after


def start_runner(client: redis.Redis, runner: str, every: float,
                 lost_after: float) -> threading.Event:
    """Stamp `runner` every `every` seconds in a daemon thread until the event is set."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            with contextlib.suppress(redis.RedisError):
                stamp_runner(client, runner, keep=lost_after * KEEP_FACTOR)
            stop.wait(every)

    threading.Thread(target=beat, name="orch-runner-heartbeat", daemon=True).start()
    return stop


# --- held messages: what each consuming process received and has not finished ----------------
#
# A step message a worker has taken from the broker sits in kombu's unacknowledged index until
# the step ends, whether the worker runs it now or holds it prefetched (its step still
# `pending` in the ledger, with no runner). The broker cannot tell a live holder from a dead
# one; it gives a message back only after the visibility timeout. So each consuming process
# publishes the task ids it holds under its runner id: the sweeper sends again the pending
# steps a dead runner held, and counts an unacknowledged message as present only while a live
# runner holds it (a connection lost in a broker outage leaves messages in the index that no
# worker will run).

HELD = "orch:held:{runner}"


def held_by(client: redis.Redis, runners: Iterable[str]) -> set[str]:
    """The task ids the `runners` hold, as they last published them."""
    keys = [HELD.format(runner=runner) for runner in runners]
    members = client.sunion(keys) if keys else set()
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}


def dead_runners(client: redis.Redis, lost_after: float) -> set[str]:
    """Runners that stopped beating more than `lost_after` seconds ago (and not long ago)."""
    members = client.zrangebyscore(RUNNERS, 0, time.time() - lost_after)
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}


def release(client: redis.Redis, runner: str, task_ids: Iterable[str]) -> None:
    """Forget that `runner` held `task_ids` (the sweeper sent them again)."""
    ids = list(task_ids)
    if ids:
        client.srem(HELD.format(runner=runner), *ids)


class Holdings:
    """The step messages this consuming process holds, published under its runner id.

    Each message is added the moment it is received (so one received just before the process
    dies is known); a snapshot of Celery's own request state replaces the set every beat, so
    messages that ended, or that Celery dropped with a lost connection, leave it. A message
    received within the last beat stays until a snapshot has seen it.
    """

    def __init__(self, client: redis.Redis, runner: str, keep: float) -> None:
        self.client, self.key, self.keep = client, HELD.format(runner=runner), int(keep) + 1
        self._recent: dict[str, float] = {}
        self._lock = threading.Lock()
        self._expires = False  # whether the published set has its expiry already

    def received(self, task_id: str) -> None:
        """Add a message just received; a broker error is left to the next snapshot."""
        with self._lock:
            self._recent[task_id] = time.monotonic()
            with contextlib.suppress(redis.RedisError):
                if self._expires:  # a set the last beat published, with its expiry: one command
                    self.client.sadd(self.key, task_id)
                    return
                pipe = self.client.pipeline(transaction=False)
                pipe.sadd(self.key, task_id)
                pipe.expire(self.key, self.keep)
                pipe.execute()
                self._expires = True

    def publish(self, held: set[str], every: float) -> None:
        """Replace the published set with `held` and the messages received in the last beat."""
        with self._lock:
            since = time.monotonic() - 2 * every
            self._recent = {t: at for t, at in self._recent.items() if at > since}
            ids = held | set(self._recent)
            self._expires = False
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.key)
            if ids:
                pipe.sadd(self.key, *ids)
                pipe.expire(self.key, self.keep)
            pipe.execute()
            self._expires = bool(ids)

    def clear(self) -> None:
        """Hold nothing any more (a worker shutting down gives its messages back)."""
        with self._lock, contextlib.suppress(redis.RedisError):
            self._recent.clear()
            self._expires = False
            self.client.delete(self.key)


def start_holdings(holdings: Holdings, held: Callable[[], set[str] | None],
                   every: float) -> threading.Event:
    """Publish `held()` (None: unknown this time) every `every` seconds until the event is set."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            snapshot = held()
            if snapshot is not None:
                with contextlib.suppress(redis.RedisError):
                    holdings.publish(snapshot, every)
            stop.wait(every)

    threading.Thread(target=beat, name="orch-holdings", daemon=True).start()
    return stop
