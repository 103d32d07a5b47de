"""One Redis subscription per API process, fanned out to the requests watching a job."""

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.events import CHANNEL

log = logging.getLogger(__name__)


class EventHub:
    """Delivers live job events to in-process subscribers by job id."""

    def __init__(self, client: "aioredis.Redis") -> None:
        self._client = client
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator["asyncio.Queue[dict[str, Any]]"]:
        """A queue that receives the job's live events while the block runs."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers[job_id].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[job_id].discard(queue)
            if not self._subscribers[job_id]:
                del self._subscribers[job_id]

    def _dispatch(self, payload: bytes) -> None:
        for event in json.loads(payload):
            for queue in self._subscribers.get(event["job_id"], ()):
                queue.put_nowait(event)

    async def _run(self) -> None:
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._dispatch(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("event hub lost Redis (%s); readers fall back to the store", exc)
                await asyncio.sleep(1)
