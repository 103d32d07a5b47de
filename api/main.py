"""The FastAPI app factory: clients built in the lifespan, one error handler for the tree."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from kombu.exceptions import OperationalError as KombuOperationalError
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError as DBOperationalError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api import console, mcp_server, openapi, scopes
from api.deps import get_caller, json_body_rule
from api.hub import EventHub
from api.limits import BodyLimit, NoNulInUrl
from api.routes import (
    agents,
    breakers,
    chat,
    compat,
    deliveries,
    health,
    inbox,
    intents,
    jobs,
    keys,
    llm,
    memory,
    resume,
    secrets,
    sessions,
    tools,
    usage,
)
from api.state import AppState
from core.errors import IntentNotFound, InvalidRequest, OrchestratorError, RateLimited
from core.settings import Settings, get_settings
from core.telemetry import start_tracing, stop_tracing
from tasks.engine.app import celery_app
from tasks.engine.resources import build_resources
from tasks.intents import REGISTRY

log = logging.getLogger(__name__)
# Probes and scrapes are noise in a trace; a resume URL's path is its token (a credential).
UNTRACED = "/health,/ready,/metrics,/v1/resume/"


def startup_line(settings: Settings) -> str:
    """Where the API is, what it stores in and sends to (passwords hidden), where its docs are."""
    base = settings.api.base_url
    store = make_url(settings.database.url).render_as_string(hide_password=True)
    broker = make_url(settings.broker.url).render_as_string(hide_password=True)
    return f"Orchestrator API at {base} (docs {base}/docs); job store {store}; broker {broker}"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    client = aioredis.Redis.from_url(settings.broker.url)
    resources = build_resources(settings)
    REGISTRY.bind(resources)
    state = AppState(resources=resources, celery=celery_app, hub=EventHub(client))
    await state.hub.start()
    app.state.orch = state
    app.state.mcp, manager = mcp_server.http_endpoint(state)
    log.info(startup_line(settings))
    try:
        async with manager.run():
            yield
    finally:
        await state.hub.stop()
        await client.aclose()
        state.close()
        stop_tracing(app.state.tracing)


def _error(status: int, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _orchestrator_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OrchestratorError)
    if isinstance(exc, IntentNotFound):
        return _error(404, str(exc), available=exc.available)
    if isinstance(exc, InvalidRequest):
        return _error(422, str(exc), field=exc.field)
    if isinstance(exc, RateLimited):
        return JSONResponse({"error": str(exc)}, status_code=429, headers=exc.headers)
    return _error(exc.status_code, str(exc))


NOT_AN_OBJECT = "the body must be a JSON object sent with 'Content-Type: application/json'"


def _problem(err: dict[str, Any]) -> dict[str, str]:
    field = ".".join(str(p) for p in err["loc"] if p != "body")
    if not field and err["type"] in ("model_attributes_type", "dict_type"):
        return {"field": "body", "message": NOT_AN_OBJECT}
    return {"field": field or "body", "message": err["msg"].removeprefix("Value error, ")}


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(err) for err in exc.errors()]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return _error(422, f"invalid request: {summary}", detail=problems)


def _allowed(request: Request) -> str:
    """Every method some route answers on this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(
                request.url.path):
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed(request)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                        headers=headers)


async def _dependency_down(_: Request, exc: Exception) -> JSONResponse:
    log.error("dependency unavailable: %s", exc)
    which = "job store" if isinstance(exc, SQLAlchemyError) else "broker"
    return _error(503, f"the {which} is unavailable; retry shortly")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return _error(500, "internal error; it has been logged")


class _Mcp:
    """`/mcp`, served by the endpoint the lifespan built (see api/mcp_server.py)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope["app"].state.mcp(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API."""
    settings = settings or get_settings()
    # Swagger UI and ReDoc served from the installed package, not a CDN.
    app = FastAPIOffline(
        title="Orchestrator", version="0.1.0", lifespan=lifespan,
        description="Submit intents as jobs; follow them by polling, SSE or callback.",
        servers=[{"url": settings.api.base_url, "description": "API_PUBLIC_URL"}],
        # The one rule for every JSON body the API stores (depth, numbers, Unicode text).
        dependencies=[Depends(json_body_rule)])
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=app.state.settings.api.max_body_bytes,
                       rpc_paths=("/mcp",))
    app.add_middleware(NoNulInUrl)
    app.add_exception_handler(OrchestratorError, _orchestrator_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for down in (DBOperationalError, RedisConnectionError, KombuOperationalError):
        app.add_exception_handler(down, _dependency_down)
    app.add_exception_handler(Exception, _unexpected)
    for router in (jobs.router, resume.router, intents.router, agents.router,
                   deliveries.router, secrets.router, tools.router, breakers.router,
                   health.router, compat.router, chat.router, sessions.router, llm.router,
                   memory.router, inbox.router, usage.router, keys.router):
        app.include_router(router)
    scopes.check_routes(app, get_caller)
    # POST only: the server is stateless and sends no notifications of its own, so it offers
    # no GET stream (which would hang open with nothing on it) and no session to DELETE; the
    # transport lets such a server answer both with 405.
    app.router.routes.append(Route("/mcp", endpoint=_Mcp(), methods=["POST"]))
    console.install(app)
    openapi.install(app)
    app.state.tracing = start_tracing(settings.telemetry, "api")
    if app.state.tracing is not None:
        FastAPIInstrumentor.instrument_app(app, tracer_provider=app.state.tracing,
                                           excluded_urls=UNTRACED)
    return app
