"""The request-body limit, on a bare ASGI app."""

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.limits import BodyLimit


async def echo_size(request: Request) -> JSONResponse:
    return JSONResponse({"size": len(await request.body())})


def post(content: bytes | list[bytes]) -> httpx.Response:
    app = BodyLimit(Starlette(routes=[Route("/", echo_size, methods=["POST"])]), max_bytes=100)

    async def go() -> httpx.Response:
        body = content if isinstance(content, bytes) else _stream(content)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as client:
            return await client.post("/", content=body)

    return asyncio.run(go())


async def _stream(chunks: list[bytes]):  # type: ignore[no-untyped-def]
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize("content", [b"x" * 100, [b"x" * 50, b"x" * 50]], ids=["whole", "chunks"])
def test_a_body_at_the_limit_passes_intact(content: bytes | list[bytes]) -> None:
    response = post(content)
    assert response.status_code == 200 and response.json() == {"size": 100}


@pytest.mark.parametrize("content", [b"x" * 101, [b"x" * 60, b"x" * 60]], ids=["whole", "chunks"])
def test_a_body_over_the_limit_is_413(content: bytes | list[bytes]) -> None:
    response = post(content)
    assert response.status_code == 413
    assert response.json() == {"error": "request body over 100 bytes; send less"}
