"""A scripted OpenAI-compatible server on loopback: real HTTP, real SSE, answers chosen per test.

Plan requests (those with `response_format`) take the next of `plans`, answer requests the
next of `answers` (the last repeats). A reply is text, or an HTTP error status, after a delay.
"""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.integration.receiver import Server, serve

USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}


@dataclass
class Reply:
    """One scripted answer: `text` (or an error `status`), after `delay` seconds."""

    text: str = ""
    status: int = 200
    delay: float = 0.0


def plan(*steps: dict[str, Any]) -> Reply:
    return Reply(json.dumps({"steps": list(steps)}))


@dataclass
class Script:
    """What the server answers next, and every request it got."""

    plans: list[Reply] = field(default_factory=lambda: [plan()])
    answers: list[Reply] = field(default_factory=lambda: [Reply("Hello from the model.")])
    requests: list[dict[str, Any]] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=lambda: {"plans": 0, "answers": 0})

    def set(self, plans: list[Reply] | None = None, answers: list[Reply] | None = None) -> None:
        self.plans = plans or [plan()]
        self.answers = answers or [Reply("Hello from the model.")]
        self.requests.clear()
        self.served = {"plans": 0, "answers": 0}

    def next(self, kind: str) -> Reply:
        replies = self.plans if kind == "plans" else self.answers
        reply = replies[min(self.served[kind], len(replies) - 1)]
        self.served[kind] += 1
        return reply


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes,
          kind: str = "application/json") -> None:
    handler.send_response(status)
    handler.send_header("content-type", kind)
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _completion(text: str) -> bytes:
    return json.dumps({
        "id": "cmpl-1", "object": "chat.completion", "created": int(time.time()),
        "model": "scripted", "usage": USAGE,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}]}).encode()


def _chunk(delta: dict[str, Any], usage: dict[str, int] | None = None) -> bytes:
    body = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": "scripted", "choices": [{"index": 0, "delta": delta}] if delta else [],
            "usage": usage}
    return f"data: {json.dumps(body)}\n\n".encode()


def _stream(handler: BaseHTTPRequestHandler, text: str) -> None:
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.end_headers()
    for word in text.split(" "):
        handler.wfile.write(_chunk({"content": word + " "}))
        handler.wfile.flush()
        time.sleep(0.02)
    handler.wfile.write(_chunk({}, USAGE) + b"data: [DONE]\n\n")
    handler.wfile.flush()
    handler.close_connection = True


def _answer(script: Script) -> Any:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        if not handler.path.startswith("/v1/"):  # no llama.cpp routes (/props, /tokenize)
            _send(handler, 404, b'{"error": "not found"}')
            return
        if handler.command == "GET":
            _send(handler, 200, json.dumps({"object": "list", "data": [
                {"id": "scripted", "object": "model", "owned_by": "tests"}]}).encode())
            return
        state: Server = handler.server.state  # type: ignore[attr-defined]
        body = json.loads(state.received[-1].body or b"{}")
        script.requests.append(body)
        reply = script.next("plans" if "response_format" in body else "answers")
        time.sleep(reply.delay)
        if reply.status != 200:
            _send(handler, reply.status, json.dumps({"error": {"message": "scripted failure",
                                                               "type": "server_error"}}).encode())
        elif body.get("stream"):
            _stream(handler, reply.text)
        else:
            _send(handler, 200, _completion(reply.text))
    return answer


@contextmanager
def scripted_llm() -> Iterator[tuple[Server, Script]]:
    """The server and its script; LLM_BASE_URL is `server.url + '/v1'`."""
    script = Script()
    with serve(_answer(script)) as server:
        yield server, script
