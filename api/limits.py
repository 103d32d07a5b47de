"""Rules every request meets before a route: a body limit enforced while reading (a large body
is refused, not buffered), and no NUL in the URL (Postgres text cannot hold one): a 422."""

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

INVALID_REQUEST = -32600  # JSON-RPC's code for a request it cannot take


class BodyLimit:
    """Answer 413 to a body over `max_bytes`, whether declared or streamed in chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int, rpc_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.rpc_paths = rpc_paths  # answered as JSON-RPC (`/mcp`)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, scope["path"] in self.rpc_paths)
            return
        body = await self._read(receive)
        if body is None:
            await self._refuse(send, scope["path"] in self.rpc_paths)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, send: Send, rpc: bool) -> None:
        message = f"request body over {self.max_bytes} bytes; send less"
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
            "code": INVALID_REQUEST, "message": message}} if rpc else {"error": message})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body.encode()})


class NoNulInUrl:
    """Answer 422 to a path or query holding NUL (`%00`) before any route looks it up.

    Every path and query parameter ends up in a store lookup, and Postgres refuses NUL in
    text; one rule here instead of a check on each parameter (the OpenAPI document states it
    as each parameter's pattern, so it is the 422 of a parameter that fails validation)."""

    MESSAGE = b'{"error": "the URL holds a NUL character (%00); remove it", "field": "url"}'

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _holds_nul(scope):
            await send({"type": "http.response.start", "status": 422,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": self.MESSAGE})
            return
        await self.app(scope, receive, send)


def _holds_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query
