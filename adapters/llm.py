"""The LLM upstream: any OpenAI-compatible server through the official `openai` client.

Every call passes the LLM breaker and the shared retry helper; `openai`'s own retries are off
so there is one policy. The client is built once per process (a pool of connections).
"""

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from adapters.breakers import Breakers
from adapters.upstream import Upstream
from core.errors import UpstreamError
from core.settings import LlmSettings, RetrySettings

UPSTREAM = "llm"
DEFAULT_CONTEXT = 8192  # the context assumed when neither the setting nor the server says
CHARS_PER_TOKEN = 3  # a conservative estimate: real tokenizers average nearer 4 on English
PROBE_TIMEOUT = 3.0
COUNTS_KEPT = 4096
Messages = list[dict[str, Any]]
OnDelta = Callable[[str], None]


@dataclass
class Usage:
    """Tokens one or more calls used, their cost and the seconds spent waiting on the model."""

    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    model_seconds: float = 0.0
    calls: int = 0

    def add(self, other: "Usage") -> None:
        self.model = other.model or self.model
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost
        self.model_seconds += other.model_seconds
        self.calls += other.calls

    def public(self) -> dict[str, Any]:
        """The `usage` a step's output carries (summed per job by the API)."""
        return {"model": self.model, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "cost": round(self.cost, 8), "model_seconds": round(self.model_seconds, 4),
                "calls": self.calls}


@dataclass
class Completion:
    """A model's answer and what it cost."""

    text: str
    usage: Usage = field(default_factory=Usage)


def price(prices: dict[str, dict[str, float]], model: str, prompt: int, completion: int) -> float:
    """USD for the tokens of one call, from the per-million price table (0 if unknown)."""
    rates = prices.get(model, {})
    return (prompt * rates.get("prompt", 0.0) + completion * rates.get("completion", 0.0)) / 1e6


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def upstream_error(exc: openai.OpenAIError) -> UpstreamError:
    """The orchestrator's error for an `openai` failure (its status decides retry and breaker)."""
    if isinstance(exc, openai.APIStatusError):
        return UpstreamError(UPSTREAM, f"{exc.status_code} {exc.message}"[:500],
                             exc.status_code, _retry_after(exc))
    return UpstreamError(UPSTREAM, f"{type(exc).__name__}: {exc}"[:500])


class LLM(Upstream):
    """A small client of the configured model: completions, streams, and the model list."""

    def __init__(self, settings: LlmSettings, breakers: Breakers, retry: RetrySettings) -> None:
        super().__init__(breakers, retry)
        self.settings = settings
        self.json_schema = settings.response_format == "json_schema"
        self.client = openai.OpenAI(
            base_url=settings.base_url, api_key=settings.api_key or "none", max_retries=0,
            timeout=openai.Timeout(settings.timeout, connect=settings.connect_timeout))
        # The server's own routes (llama.cpp's /props and /tokenize live beside /v1).
        self.probe = httpx.Client(base_url=settings.base_url.removesuffix("/v1"),
                                  timeout=PROBE_TIMEOUT, trust_env=False,
                                  headers={"Authorization": f"Bearer {settings.api_key}"})
        self._context: int | None = None
        self._tokenizer = True  # until the server shows it has none
        self._counts: dict[str, int] = {}

    @property
    def _chat(self) -> Any:
        """Chat completions, untyped: messages and options are plain dicts here."""
        return self.client.chat.completions

    def close(self) -> None:
        self.client.close()
        self.probe.close()

    def context_tokens(self) -> int:
        """Tokens the model's context holds: the setting, else what the server says (asked
        once per process), else DEFAULT_CONTEXT."""
        if self.settings.context_tokens:
            return self.settings.context_tokens
        if self._context is None:
            self._context = self._server_context() or DEFAULT_CONTEXT
        return self._context

    def _server_context(self) -> int | None:
        """llama.cpp's slot context (`/props`), or the model's entry in `/v1/models`."""
        props = self._get_json("/props")
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        if isinstance(settings, dict) and isinstance(settings.get("n_ctx"), int):
            return int(settings["n_ctx"])
        models = self._get_json("/v1/models")
        for entry in models.get("data", []) if isinstance(models, dict) else []:
            if isinstance(entry, dict) and entry.get("id") == self.settings.model:
                meta = entry.get("meta")
                found = entry.get("context_length") or (
                    meta.get("n_ctx") if isinstance(meta, dict) else None)
                return int(found) if isinstance(found, int) and found > 0 else None
        return None

    def _get_json(self, path: str) -> Any:
        try:
            answer = self.probe.get(path)
            return answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def count(self, text: str) -> int:
        """Tokens of `text`: the server's tokenizer when it has one (llama.cpp `/tokenize`),
        else a conservative estimate (CHARS_PER_TOKEN)."""
        if (known := self._counts.get(text)) is not None:
            return known
        counted = self._tokenize(text) if self._tokenizer else None
        found = counted if counted is not None else estimate(text)
        if len(self._counts) >= COUNTS_KEPT:
            self._counts.clear()
        self._counts[text] = found
        return found

    def _tokenize(self, text: str) -> int | None:
        try:
            answer = self.probe.post("/tokenize", json={"content": text})
        except httpx.HTTPError:
            return None
        try:
            tokens = answer.json().get("tokens") if answer.status_code == 200 else None
        except (ValueError, AttributeError):
            tokens = None
        if not isinstance(tokens, list):
            self._tokenizer = answer.status_code >= 500  # 404: this server has no tokenizer
            return None
        return len(tokens)

    def _call(self, fn: Callable[[], Any]) -> Any:
        def guarded() -> Any:
            try:
                return fn()
            except openai.OpenAIError as exc:
                raise upstream_error(exc) from exc
        return self.guarded(UPSTREAM, guarded)

    def _usage(self, raw: Any, seconds: float) -> Usage:
        prompt = getattr(raw, "prompt_tokens", 0) or 0
        completion = getattr(raw, "completion_tokens", 0) or 0
        model = self.settings.model
        return Usage(model, prompt, completion,
                     price(self.settings.prices, model, prompt, completion), seconds, 1)

    def _options(self) -> dict[str, Any]:
        return {"model": self.settings.model, "max_tokens": self.settings.max_tokens,
                "temperature": self.settings.temperature}

    def complete_json(self, messages: Messages, schema: dict[str, Any]) -> Completion:
        """A JSON answer: by `json_schema` if the server takes it, else `json_object`."""
        if self.json_schema:
            try:
                return self._complete(messages, {"type": "json_schema", "json_schema": {
                    "name": "plan", "schema": schema, "strict": False}})
            except UpstreamError as exc:
                if exc.status not in (400, 422) or "response_format" not in str(exc):
                    raise
                self.json_schema = False  # this server refuses json_schema: stop asking
        return self._complete(messages, {"type": "json_object"})

    def _complete(self, messages: Messages, response_format: dict[str, Any]) -> Completion:
        started = time.perf_counter()
        answer = self._call(lambda: self._chat.create(
            messages=messages, response_format=response_format, **self._options()))
        text = answer.choices[0].message.content or "" if answer.choices else ""
        return Completion(text, self._usage(answer.usage, time.perf_counter() - started))

    def stream(self, messages: Messages, on_delta: OnDelta) -> Completion:
        """A streamed answer: `on_delta` gets each piece of text as it arrives."""
        started = time.perf_counter()

        def run() -> Completion:
            parts: list[str] = []
            usage = None
            chunks = self._chat.create(
                messages=messages, stream=True, stream_options={"include_usage": True},
                **self._options())
            for chunk in _chunks(chunks):
                usage = chunk.usage or usage
                text = chunk.choices[0].delta.content if chunk.choices else None
                if text:
                    parts.append(text)
                    on_delta(text)
            return Completion("".join(parts), self._usage(usage, 0.0))

        done: Completion = self._call(run)
        done.usage.model_seconds = time.perf_counter() - started
        return done

    def planner(self) -> dict[str, Any]:
        """Which planner prompts get now: the model, or the rule-based one and why."""
        if not self.settings.enabled:
            return {"planner": "rule-based",
                    "reason": "no model is configured (LLM_API_KEY is not set)"}
        if self.breakers.breaker(UPSTREAM).current_state == "open":
            return {"planner": "rule-based", "reason": f"the {UPSTREAM} breaker is open"}
        return {"planner": "llm", "model": self.settings.model,
                "base_url": self.settings.base_url}

    def models(self) -> list[str]:
        """The model ids the server lists."""
        page = self._call(lambda: self.client.models.list())
        return sorted(model.id for model in page.data)


def estimate(text: str) -> int:
    """A conservative token count without a tokenizer."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _chunks(stream: Any) -> Iterator[Any]:
    with stream:
        yield from stream

