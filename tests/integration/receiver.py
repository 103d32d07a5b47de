"""A real HTTP callback receiver on loopback that answers from a script and records requests."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next scripted (status, headers); the last one repeats."""

    script: list[tuple[int, dict[str, str]]]
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def answer(self) -> tuple[int, dict[str, str]]:
        index = min(len(self.received) - 1, len(self.script) - 1)
        return self.script[index]


@contextmanager
def receiver(script: list[tuple[int, dict[str, str]]]) -> Iterator[Receiver]:
    """Serve `script` on 127.0.0.1 until the block ends."""
    state = Receiver(script=script)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            state.received.append(Received(self.path, dict(self.headers), body))
            status, headers = state.answer()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST  # noqa: N815

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
