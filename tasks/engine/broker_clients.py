"""One Redis client per kombu channel, not one per command.

kombu's Redis transport builds a new `redis.Redis` for every synchronous command it sends
(`Channel._create_client`): twice per message a worker takes (the unacknowledged index at
delivery and at the ack), and once per batch the API publishes. Building one fills a table of
about 170 reply callbacks, which made it the largest single cost in a tools worker's CPU
profile (7 % of it, in `CaseInsensitiveDict`). A client holds no connection of its own (each
command borrows one from the channel's pool) and is safe to share between threads, so each
channel keeps one for as long as its pool stays the same.
"""

import threading
from typing import Any

from kombu.transport import redis as kombu_redis

_create_client = kombu_redis.Channel._create_client
_creating = threading.Lock()


def _kept(channel: Any) -> Any:
    kept = channel.__dict__.get("_kept_client")
    return kept if kept is not None and kept.connection_pool is channel.pool else None


def _kept_client(self: Any, asynchronous: bool = False) -> Any:
    if asynchronous:  # the event loop's own connection: as kombu makes it
        return _create_client(self, asynchronous=True)  # type: ignore[no-untyped-call]
    kept = _kept(self)
    if kept is None:
        with _creating:  # threads asking at once for the first time make one, not several
            kept = _kept(self)
            if kept is None:
                kept = self._kept_client = _create_client(self)  # type: ignore[no-untyped-call]
    return kept


kombu_redis.Channel._create_client = _kept_client  # type: ignore[method-assign]
