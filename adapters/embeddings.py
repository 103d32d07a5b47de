"""Embedders behind one small interface: WordLlama in-process, or an OpenAI-compatible server.

Vectors come back as float32 rows of unit length, so cosine similarity is a dot product.
Only the memory pool builds an embedder (once per worker process, on its first memory step).
"""

from pathlib import Path
from typing import Any

import numpy as np
import openai

from adapters.breakers import Breakers
from adapters.upstream import Upstream
from core.errors import UpstreamError
from core.memory.search import Embedder
from core.settings import EmbeddingsSettings, RetrySettings

Matrix = np.ndarray[Any, np.dtype[np.float32]]
UPSTREAM = "embeddings"


def normalize(vectors: Any) -> Matrix:
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)


class WordLlamaEmbedder:
    """WordLlama with the weights its wheel ships; it never downloads anything."""

    def __init__(self, config: str, dim: int) -> None:
        import wordllama

        # The wheel ships its weights and tokenizer; without `disable_download` a missing file
        # would be fetched from a model hub at run time.
        self._model = wordllama.WordLlama.load(
            config=config, dim=dim, cache_dir=Path(wordllama.__file__).parent,
            disable_download=True)
        self.name = f"wordllama:{config}:{dim}"
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: list[str]) -> Matrix:
        return normalize(self._model.embed(texts, norm=True))

    def close(self) -> None:
        return None


def _upstream_error(exc: openai.OpenAIError) -> UpstreamError:
    """The OpenAI client's error as the retry helper and breakers understand it."""
    if isinstance(exc, openai.APIStatusError):
        retry_after = exc.response.headers.get("retry-after")
        return UpstreamError(UPSTREAM, f"HTTP {exc.status_code} from {exc.request.url}: "
                             f"{exc.message}", status=exc.status_code,
                             retry_after=float(retry_after) if retry_after and
                             retry_after.isdigit() else None)
    return UpstreamError(UPSTREAM, f"{type(exc).__name__}: {exc}")


class OpenAIEmbedder(Upstream):
    """Any OpenAI-compatible `/v1/embeddings`, through the shared retry helper and a breaker."""

    def __init__(self, settings: EmbeddingsSettings, breakers: Breakers,
                 retry: RetrySettings) -> None:
        super().__init__(breakers, retry)
        self._client = openai.OpenAI(base_url=settings.base_url, api_key=settings.api_key or "-",
                                     timeout=settings.timeout, max_retries=0)
        self._model = settings.model
        self.name = settings.name
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed(["dimension"]).shape[1])
        return self._dim

    def embed(self, texts: list[str]) -> Matrix:
        matrix = normalize(self.guarded(UPSTREAM, lambda: self._request(texts)))
        self._dim = int(matrix.shape[1])
        return matrix

    def _request(self, texts: list[str]) -> list[list[float]]:
        try:
            answer = self._client.embeddings.create(model=self._model, input=texts,
                                                    encoding_format="float")
        except openai.OpenAIError as exc:
            raise _upstream_error(exc) from exc
        ordered = sorted(answer.data, key=lambda item: item.index)
        if len(ordered) != len(texts):
            raise UpstreamError(UPSTREAM, f"asked for {len(texts)} embeddings, got "
                                f"{len(ordered)}")
        return [list(item.embedding) for item in ordered]

    def close(self) -> None:
        self._client.close()


def build_embedder(settings: EmbeddingsSettings, breakers: Breakers,
                   retry: RetrySettings) -> Embedder:
    """The configured embedder: an OpenAI-compatible server if EMBEDDINGS_BASE_URL is set."""
    if settings.base_url:
        return OpenAIEmbedder(settings, breakers, retry)
    return WordLlamaEmbedder(settings.wordllama_config, settings.wordllama_dim)
