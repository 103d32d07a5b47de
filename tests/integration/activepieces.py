"""A loopback server speaking ActivePieces' webhook protocol (ActivePieces is too heavy to run).

`POST /api/v1/webhooks/{flow}/sync` runs the flow and answers with its "Return Response" body;
`POST /api/v1/webhooks/{flow}` answers at once and runs the flow afterwards, which here posts
its result to the step's resume URL, as a flow's HTTP piece would.
"""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

PREFIX = "/api/v1/webhooks/"


def _result(flow: str, payload: dict[str, Any]) -> dict[str, Any]:
    question = str(payload.get("inputs", {}).get("question", ""))
    return {"answer": question[::-1], "flow": flow, "by": "activepieces"}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        payload = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        path = self.path.removeprefix(PREFIX)
        flow, _, sync = path.partition("/")
        if sync == "sync":
            self._send(200, json.dumps(_result(flow, payload)).encode())
            return
        self._send(200, b"")
        threading.Timer(0.3, lambda: httpx.post(payload["resume_url"],
                                                json=_result(flow, payload))).start()

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def serve(port: int) -> Iterator[str]:
    """Serve on `port`; yields the base URL ActivePieces flows are configured with."""
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}{PREFIX.rstrip('/')}"
    finally:
        server.shutdown()
        server.server_close()
