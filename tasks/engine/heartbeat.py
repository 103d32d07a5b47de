"""Worker liveness in Redis: each worker stamps the pools it consumes; `/ready` reads them."""

import contextlib
import os
import socket
import threading
import time

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


def runner_id() -> str:
    """This process as the ledger records it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
                stamp_runner(client, runner, keep=lost_after * 10)
            stop.wait(every)

    threading.Thread(target=beat, name="orch-runner-heartbeat", daemon=True).start()
    return stop
