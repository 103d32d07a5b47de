"""A loopback agent speaking reference 003's protocol: `GET /health`, and `POST /invoke`
answering an SSE stream of `delta` events and one `done`."""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Agent:
    """What the agent was asked, and how many of its next streams break off midway."""

    url: str = ""
    invoked: list[dict[str, Any]] = field(default_factory=list)
    drops: int = 0


def _handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            status = 200 if self.path == "/health" else 404
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            agent.invoked.append(body)
            words = ["Hello", ", ", body["input_message"]["content"], "!"]
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            for n, word in enumerate(words):
                self._event("delta", {"text": word, "run_id": body["run_id"]})
                if n == 1 and agent.drops > 0:
                    agent.drops -= 1
                    return  # the connection closes before `done`
            self._event("done", {"final_message": "".join(words), "usage": {"tokens": 4}})

        def _event(self, kind: str, data: dict[str, Any]) -> None:
            self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

        def log_message(self, *_: object) -> None:
            pass

    return Handler


@contextmanager
def serve() -> Iterator[Agent]:
    agent = Agent()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(agent))
    agent.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield agent
    finally:
        server.shutdown()
        server.server_close()
