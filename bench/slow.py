"""A loopback HTTP server whose every answer takes `?wait=` seconds (the upstream both sides call).

Run by the benchmark as `uvicorn bench.slow:app`; asyncio holds thousands of waits at once.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    query = parse_qs(scope.get("query_string", b"").decode())
    await asyncio.sleep(float(query.get("wait", ["0"])[0]))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})
