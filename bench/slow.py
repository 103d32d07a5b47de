"""A loopback HTTP server whose every answer takes `?wait=` seconds (the upstream both sides call),
and that counts the callbacks posted to `/hook` (`GET /hook/stats?since=N`: how many, and
when the first and last after the N-th arrived).

Run by the benchmark as `uvicorn bench.slow:app`; asyncio holds thousands of waits at once.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


HOOKS: list[float] = []  # when each callback arrived


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/hook":
        HOOKS.append(time.time())
    if scope["path"] == "/hook/stats":
        since = int(parse_qs(scope.get("query_string", b"").decode()).get("since", ["0"])[0])
        window = HOOKS[since:]
        stats = {"count": len(HOOKS), "first": min(window, default=0),
                 "last": max(window, default=0)}
        await _answer(send, json.dumps(stats).encode())
        return
    query = parse_qs(scope.get("query_string", b"").decode())
    await asyncio.sleep(float(query.get("wait", ["0"])[0]))
    await _answer(send, b'{"ok":true}')


async def _answer(send: Send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
