"""Worker liveness in Redis: each worker stamps the pools it consumes; `/ready` reads them."""

import contextlib
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
