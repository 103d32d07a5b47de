"""Real HTTP(S) servers on loopback that record every request; the tests' callback receivers."""

import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    """One request a test server got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """A loopback server: its base URL, port, what it received and the TLS names it was asked."""

    url: str
    port: int
    received: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)


Answer = Callable[[BaseHTTPRequestHandler], None]


class _Quiet(ThreadingHTTPServer):
    block_on_close = False
    daemon_threads = True


@contextmanager
def serve(answer: Answer, tls: ssl.SSLContext | None = None, port: int = 0,
          keep_alive: bool = False) -> Iterator[Server]:
    """Serve on 127.0.0.1 (`port`, or a free one) and let `answer` write every response; with
    `keep_alive`, HTTP/1.1 connections stay open between requests."""
    server = _Quiet(("127.0.0.1", port), _handler(answer, keep_alive))
    port = server.server_address[1]
    state = Server(url=f"{'https' if tls else 'http'}://127.0.0.1:{port}", port=port)
    server.state = state  # type: ignore[attr-defined]
    if tls is not None:
        def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            state.sni.append(name)

        tls.sni_callback = record_sni
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _handler(answer: Answer, keep_alive: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            state: Server = self.server.state  # type: ignore[attr-defined]
            state.received.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()},
                                      body))
            answer(self)

        do_GET = do_POST  # noqa: N815

        def log_message(self, *_: object) -> None:
            return

    return Handler


def reply(status: int, headers: dict[str, str] | None = None, body: bytes = b"ok") -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


@dataclass
class Script:
    """Answers the n-th request with the n-th (status, headers) of `steps`; the last repeats."""

    steps: list[tuple[int, dict[str, str]]]
    served: int = 0

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        status, headers = self.steps[min(self.served, len(self.steps) - 1)]
        self.served += 1
        reply(status, headers)(handler)
