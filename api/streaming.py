"""Server-sent events for one job: the stored log first, then live events, gap-free."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.concurrency import run_in_threadpool

from api.state import AppState
from core.events import event_dict
from core.models import TERMINAL_EVENTS
from core.store.queries import list_events
from core.store.waits import reveal

PAGE = 500
RECHECK_SECONDS = 2.0


def read_events(state: AppState, job_id: str, after: int) -> list[dict[str, Any]]:
    """Stored events after `after`, oldest first."""
    with state.db.read() as session:
        events = list_events(session=session, job_id=job_id, after=after, limit=PAGE)
        return [event_dict(event, reveal(event.type, event.data, state.vault))
                for event in events]


def _sse(event: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(event["id"]), "event": event["type"], "data": json.dumps(event)}


async def follow(state: AppState, job_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
    """Yield the job's events after `after`, in order, until its terminal event."""
    last = after
    with state.hub.subscribe(job_id) as queue:
        while True:
            for event in await run_in_threadpool(read_events, state, job_id, last):
                last = event["id"]
                yield event
                if event["type"] in TERMINAL_EVENTS:
                    return
            await _wait_for_newer(queue, last)


async def job_events(state: AppState, job_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
    """The job's events after `after` as SSE messages, until its terminal event."""
    async for event in follow(state, job_id, after):
        yield _sse(event)


async def _wait_for_newer(queue: "asyncio.Queue[dict[str, Any]]", last: int) -> None:
    """Wait for a live event newer than `last`; the caller then reads the store from `last`.

    Reading the store rather than the message keeps the stream in order and without gaps even
    when a pub/sub message is lost; the timeout re-reads in case one was.
    """
    try:
        while True:
            event = await asyncio.wait_for(queue.get(), timeout=RECHECK_SECONDS)
            if event["id"] > last:
                return
    except TimeoutError:
        return
