"""`orchestrator dev`'s one `ready` line: only once every pool of the Procfile has a live worker."""

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rich.console import Console

from workers import cli


class Ready(BaseHTTPRequestHandler):
    """`/ready` as the API answers it: 503 until the `tools` pool's worker is live (4th ask)."""

    asked = 0

    def do_GET(self) -> None:
        Ready.asked += 1
        live = 1 if Ready.asked >= 4 else 0
        body = json.dumps({"status": "ready" if live else "not ready", "checks": {
            "pools": {"tools": {"live": live}, "llm": {"live": 0}}}}).encode()
        self.send_response(200 if live else 503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    Ready.asked = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_ready_is_said_once_the_procfiles_pools_are_live(
        api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a Procfile with a tools worker (and no llm worker) and an API still waiting for it
    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, width=200))
    pools = cli._pools_of({"api": ["orchestrator", "api"],
                           "tools": ["orchestrator", "worker", "--pool", "tools"]})
    assert pools == ["tools"]
    # When dev watches /ready
    cli._announce_ready(api, pools, threading.Event())
    # Then the one line comes once the tools worker is live, not before
    assert Ready.asked == 4
    assert screen.getvalue() == f"ready: API at {api}  (docs {api}/docs); pools live: tools\n"
