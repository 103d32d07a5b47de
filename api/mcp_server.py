"""The orchestrator as an MCP server: every intent a tenant may use is a tool.

Streamable HTTP at `/mcp` (the same bearer API keys as every route; stateless, JSON answers,
POST only: a GET for a server-to-client stream answers 405, as the transport allows)
and stdio with `orchestrator mcp` (which speaks to the API with a key). A tool call submits a
job and answers its result or, when the job outlives the sync timeout, its id and links.

The Tasks utility (protocol 2025-11-25) is served in front of the SDK, which does not
implement it: a task-augmented `tools/call` answers a task backed by the job, and
`tasks/get`, `tasks/result`, `tasks/cancel`, `tasks/list` read and cancel jobs. A task is the
job, so it survives a restart of the API; a held step shows as `input_required`; it is kept for
the `ttl` the client asked for, at most API_MCP_TASK_TTL.

Tool names are what MCP clients accept (`^[a-zA-Z0-9_-]{1,64}$`): `memory.search` is
`memory_search`, `mcp.time.get_current_time` is `mcp__time__get_current_time`, a name too long
or clashing with another takes a hash suffix; the intent's own name is the tool's `title` and
its `_meta["orchestrator/intent"]`, and a call by either name works.
"""

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import mcp_types as types
from fastapi.concurrency import run_in_threadpool
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import service
from api.schemas import deduplication, job_public, json_fault
from api.scopes import MCP_SCOPES, lacks
from api.state import AppState, Authorized
from core.errors import Forbidden, NotFound, OrchestratorError, RateLimited
from core.models import Effect, utcnow
from core.store.queries import list_jobs
from tasks.intents import REGISTRY

TENANT = "orch.tenant"
# The id of the API key of the request being answered (the SDK's tasks inherit it).
CALLING_KEY: ContextVar[str | None] = ContextVar("orch_calling_key", default=None)
POLL_MS = 500
TTL_KEY = "mcp_task_ttl_ms"
NAME_MAX = 64
NOT_A_NAME = re.compile(r"[^a-zA-Z0-9_-]")
META_INTENT = "orchestrator/intent"
MCP_PREFIX = "mcp."
RESULT_WAIT_SECONDS = 300.0
TASK_STATUS = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled",
               "awaiting_approval": "input_required"}
Job = dict[str, Any]


@dataclass(frozen=True)
class Offer:
    """An intent offered to the tenant, as a tool is made of it."""

    intent: str
    description: str
    schema: dict[str, Any]
    effect: str = Effect.write


class Backend(Protocol):
    """Where tools come from and jobs go: the API in-process, or the API over HTTP."""

    async def tools(self, tenant: str) -> list[Offer]: ...
    async def submit(self, tenant: str, intent: str, inputs: dict[str, Any],
                     wait: float, context: dict[str, Any]) -> Job: ...
    async def job(self, tenant: str, job_id: str) -> Job: ...
    async def cancel(self, tenant: str, job_id: str) -> Job: ...
    async def jobs(self, tenant: str, limit: int) -> list[Job]: ...


def _clean(text: str) -> str:
    return NOT_A_NAME.sub("_", text)


def _suffixed(name: str, intent: str) -> str:
    digest = hashlib.sha256(intent.encode()).hexdigest()[:8]
    return f"{name[:NAME_MAX - len(digest) - 1]}_{digest}"


def tool_name(intent: str) -> str:
    """The intent's name as MCP clients accept it: `mcp.<server>.<tool>` as
    `mcp__<server>__<tool>`, any other character outside `[a-zA-Z0-9_-]` as `_`, a name over 64
    characters cut with a hash of the intent's name."""
    if intent.startswith(MCP_PREFIX):
        server, _, rest = intent.removeprefix(MCP_PREFIX).partition(".")
        name = f"mcp__{_clean(server)}__{_clean(rest)}"
    else:
        name = _clean(intent)
    return name if len(name) <= NAME_MAX else _suffixed(name, intent)


def tool_names(intents: list[str]) -> dict[str, str]:
    """Tool name → intent, unique: of intents whose names clash, the first by name keeps the
    name, each other takes a hash suffix of its own."""
    names: dict[str, str] = {}
    for intent in sorted(intents):
        name = tool_name(intent)
        names[_suffixed(name, intent) if name in names else name] = intent
    return names


def tool(name: str, offer: Offer) -> types.Tool:
    """A tool of an offered intent: its MCP name, the intent's own as `title` and `_meta`."""
    return types.Tool(name=name, title=offer.intent, description=offer.description,
                      input_schema=offer.schema, meta={META_INTENT: offer.intent},
                      annotations=types.ToolAnnotations(
                          read_only_hint=offer.effect == Effect.read),
                      execution=types.ToolExecution(task_support="optional"))


async def tools_of(backend: "Backend", tenant: str) -> list[types.Tool]:
    offers = {offer.intent: offer for offer in await backend.tools(tenant)}
    return [tool(name, offers[intent])
            for name, intent in tool_names(list(offers)).items()]


async def intent_of(backend: "Backend", tenant: str, name: str) -> str:
    """The intent a tool name stands for; a name that is none of them is passed on as an
    intent's (the registry answers for it)."""
    offers = await backend.tools(tenant)
    return tool_names([offer.intent for offer in offers]).get(name, name)


@dataclass
class LocalBackend:
    """The API process itself: the registry, the job service and the store."""

    state: AppState

    async def tools(self, tenant: str) -> list[Offer]:
        intents = await run_in_threadpool(REGISTRY.offered, tenant,
                                          self.state.settings.orchestrator.exposed_intents)
        return [Offer(i.name, i.description, i.schema(), i.effect) for i in intents]

    async def submit(self, tenant: str, intent: str, inputs: dict[str, Any],
                     wait: float, context: dict[str, Any]) -> Job:
        request = service.Request(tenant_id=tenant, intent=intent, inputs=inputs, mode="auto",
                                  context=context, callback_url=None, idempotency_key=None,
                                  key_id=CALLING_KEY.get())
        job, steps, created = await service.submit(self.state, request, wait)
        return job_public(job, steps).model_copy(update=deduplication(job, created)).model_dump(
            mode="json")

    async def job(self, tenant: str, job_id: str) -> Job:
        job, steps = await run_in_threadpool(service.load_job, self.state, tenant, job_id)
        pending = await run_in_threadpool(service.pending_action, self.state, steps)
        return job_public(job, steps, pending).model_dump(mode="json")

    async def cancel(self, tenant: str, job_id: str) -> Job:
        job, steps = await run_in_threadpool(service.cancel, self.state, tenant, job_id)
        return job_public(job, steps).model_dump(mode="json")

    async def jobs(self, tenant: str, limit: int) -> list[Job]:
        def read() -> list[Job]:
            with self.state.db.read() as session:
                return [job_public(j, []).model_dump(mode="json") for j in list_jobs(
                    session=session, tenant_id=tenant, status=None, intent=None, limit=limit,
                    before=None)]
        return await run_in_threadpool(read)


@dataclass
class HttpBackend:
    """A running API, reached with one tenant's key (`orchestrator mcp` over stdio)."""

    http: httpx.AsyncClient

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise OrchestratorError(response.json().get("error", response.text))
        return response.json()

    async def tools(self, tenant: str) -> list[Offer]:
        return [Offer(i["name"], i["description"], i["input_schema"], i.get("effect", "write"))
                for i in await self._json("GET", "/v1/intents")]

    async def submit(self, tenant: str, intent: str, inputs: dict[str, Any],
                     wait: float, context: dict[str, Any]) -> Job:
        answer = await self._json("POST", "/v1/jobs", json={
            "intent": intent, "inputs": inputs, "wait": wait, "context": context})
        return dict(answer) if "steps" in answer else await self.job(tenant, answer["job_id"])

    async def job(self, tenant: str, job_id: str) -> Job:
        return dict(await self._json("GET", f"/v1/jobs/{job_id}"))

    async def cancel(self, tenant: str, job_id: str) -> Job:
        return dict(await self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    async def jobs(self, tenant: str, limit: int) -> list[Job]:
        return list((await self._json("GET", "/v1/jobs", params={"limit": limit}))["items"])


def call_result(job: Job) -> types.CallToolResult:
    """A job as a tool's answer: its result, its error, or (still running) where to follow it."""
    status, result = job["status"], job.get("result")
    if status == "succeeded":
        structured = result if isinstance(result, dict) else {"result": result}
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(
            result, default=str))], structured_content=structured)
    if status in ("failed", "cancelled"):
        text = job.get("error") or f"the job was {status}"
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                    is_error=True)
    follow = {"job_id": job["job_id"], "status": status, "links": job["links"]}
    return types.CallToolResult(content=[types.TextContent(type="text", text=(
        f"job {job['job_id']} is {status}; follow it at {job['links']['self']}"))],
        structured_content=follow)


def ttl_of(job: Job, most: int) -> int:
    """The task's ttl (ms): what its creation asked for, else the longest allowed."""
    asked = (job.get("context") or {}).get(TTL_KEY)
    return min(asked, most) if isinstance(asked, int) and asked > 0 else most


def expired(job: Job, most: int) -> bool:
    """Whether the task's ttl has passed since it was created."""
    created = datetime.fromisoformat(job["created_at"])
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (utcnow() - created).total_seconds() * 1000 > ttl_of(job, most)


def task_of(job: Job, most: int) -> types.Task:
    """A job as an MCP task: same id, its status mapped, a held step as `input_required`."""
    status = TASK_STATUS.get(job["status"], "working")
    pending = job.get("pending") or {}
    message = job.get("error") or pending.get("reason")
    return types.Task(task_id=job["job_id"], status=status,
                      status_message=message, created_at=job["created_at"],
                      last_updated_at=job.get("finished_at") or job.get("started_at")
                      or job["created_at"], ttl=ttl_of(job, most), poll_interval=POLL_MS)


class OrchestratorServer(Server[Any]):
    """The SDK's low-level server, declaring the Tasks utility where it is served (HTTP)."""

    serves_tasks = False

    def get_capabilities(self, *args: Any, **kwargs: Any) -> types.ServerCapabilities:
        capabilities = super().get_capabilities(*args, **kwargs)
        if not self.serves_tasks:
            return capabilities
        capabilities.tasks = types.ServerTasksCapability(
            list=types.TasksListCapability(), cancel=types.TasksCancelCapability(),
            requests=types.ServerTasksRequestsCapability(
                tools=types.TasksToolsCapability(call=types.TasksCallCapability())))
        return capabilities


def build_server(backend: Backend, tenant_of: Callable[[Any], str],
                 sync_timeout: float) -> OrchestratorServer:
    """The MCP server: tools are the tenant's intents; a call is a job."""

    async def list_tools(ctx: Any, _: types.PaginatedRequestParams | None
                         ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=await tools_of(backend, tenant_of(ctx)))

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        tenant = tenant_of(ctx)
        try:
            intent = await intent_of(backend, tenant, params.name)
            job = await backend.submit(tenant, intent, params.arguments or {}, sync_timeout,
                                       {"via": "mcp"})
        except OrchestratorError as exc:
            return types.CallToolResult(content=[types.TextContent(type="text", text=str(exc))],
                                        is_error=True)
        return call_result(job)

    return OrchestratorServer("orchestrator", version="0.1.0", on_list_tools=list_tools,
                              on_call_tool=call_tool, instructions=(
                                  "Each tool is an orchestrator intent; a call runs it as a "
                                  "job. Long calls: ask for a task and poll tasks/get."))


class Tasks:
    """The Tasks utility over jobs (protocol 2025-11-25)."""

    def __init__(self, backend: Backend, most_ttl_ms: int) -> None:
        self.backend, self.most = backend, most_ttl_ms
        self.methods: dict[str, Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "tasks/get": self.get, "tasks/result": self.result, "tasks/cancel": self.cancel,
            "tasks/list": self.list}

    def handles(self, message: dict[str, Any]) -> bool:
        if message.get("method") == "tools/call":
            return isinstance((message.get("params") or {}).get("task"), dict)
        return message.get("method") in self.methods

    async def answer(self, tenant: str, message: dict[str, Any]) -> dict[str, Any]:
        params = message.get("params") or {}
        if message["method"] == "tools/call":
            return await self.create(tenant, params)
        return await self.methods[message["method"]](tenant, params)

    async def create(self, tenant: str, params: dict[str, Any]) -> dict[str, Any]:
        """Start the job of a task-augmented call, kept for the `ttl` asked (capped)."""
        asked = types.TaskMetadata.model_validate(params.get("task") or {}).ttl
        ttl = min(asked, self.most) if asked is not None and asked > 0 else self.most
        intent = await intent_of(self.backend, tenant, str(params.get("name")))
        job = await self.backend.submit(tenant, intent, params.get("arguments") or {}, 0.0,
                                        {"via": "mcp", TTL_KEY: ttl})
        return types.CreateTaskResult(task=task_of(job, self.most)).model_dump(
            by_alias=True, mode="json", exclude_none=True)

    async def _job(self, tenant: str, task_id: str) -> Job:
        """The task's job; a task past its ttl is as gone as one never created."""
        job = await self.backend.job(tenant, task_id)
        if expired(job, self.most):
            raise NotFound(f"task {task_id} not found (its ttl has passed)")
        return job

    async def get(self, tenant: str, params: dict[str, Any]) -> dict[str, Any]:
        job = await self._job(tenant, _task_id(params))
        return task_of(job, self.most).model_dump(by_alias=True, mode="json", exclude_none=True)

    async def result(self, tenant: str, params: dict[str, Any]) -> dict[str, Any]:
        """The call's result once the job ended (this waits for it, as the spec asks)."""
        task_id, deadline = _task_id(params), time.monotonic() + RESULT_WAIT_SECONDS
        job = await self._job(tenant, task_id)
        while TASK_STATUS.get(job["status"]) not in ("completed", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise OrchestratorError(f"task {task_id} is still {job['status']}")
            await asyncio.sleep(POLL_MS / 1000)
            job = await self.backend.job(tenant, task_id)
        answer = call_result(job).model_dump(by_alias=True, mode="json", exclude_none=True)
        answer["_meta"] = {"io.modelcontextprotocol/related-task": {"taskId": task_id}}
        return answer

    async def cancel(self, tenant: str, params: dict[str, Any]) -> dict[str, Any]:
        task_id = _task_id(params)
        await self._job(tenant, task_id)
        job = await self.backend.cancel(tenant, task_id)
        return task_of(job, self.most).model_dump(by_alias=True, mode="json", exclude_none=True)

    async def list(self, tenant: str, params: dict[str, Any]) -> dict[str, Any]:
        jobs = await self.backend.jobs(tenant, 50)
        return {"tasks": [task_of(j, self.most).model_dump(by_alias=True, mode="json",
                                                           exclude_none=True)
                          for j in jobs if not expired(j, self.most)]}


def _task_id(params: dict[str, Any]) -> str:
    task_id = params.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise OrchestratorError("params.taskId is required")
    return task_id


async def _body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _json_response(send: Send, status: int, payload: dict[str, Any],
                         headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class RpcError(OrchestratorError):
    """Raised when a `/mcp` message is not a JSON-RPC request this server can read."""

    def __init__(self, code: int, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code, self.request_id = code, request_id

    def reply(self) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": self.request_id,
                "error": {"code": self.code, "message": str(self)}}


def parse_message(body: bytes) -> dict[str, Any]:
    """The JSON-RPC message in `body`, its envelope and params checked (the storage rule of
    every JSON the API keeps, `json_fault`, included); RpcError says which rule it broke."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise RpcError(types.PARSE_ERROR, "Parse error: the body is not JSON (UTF-8, not "
                       "nested too deep to read)") from None
    if not isinstance(message, dict):
        raise RpcError(types.INVALID_REQUEST, "a message must be one JSON-RPC object "
                       "(batches are not supported)")
    _check_envelope(message)
    request_id = message.get("id")
    params = message.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(types.INVALID_PARAMS, "params must be an object (by name)", request_id)
    if fault := json_fault(params):
        raise RpcError(types.INVALID_PARAMS, f"params: {fault}", request_id)
    if message.get("method") == "tools/call":
        _check_call(params, request_id)
    return message


def _check_envelope(message: dict[str, Any]) -> None:
    request_id = message.get("id")
    if "id" in message and (isinstance(request_id, bool) or not isinstance(
            request_id, str | int) or json_fault(request_id)):
        raise RpcError(types.INVALID_REQUEST, "id must be a string or an integer")
    if message.get("jsonrpc") != "2.0":
        raise RpcError(types.INVALID_REQUEST, 'jsonrpc must be "2.0"', request_id)
    method = message.get("method")
    if method is None and "id" in message and ("result" in message or "error" in message):
        return  # a response to a request of the server's: the SDK's to take
    if not isinstance(method, str) or not method or json_fault(method):
        raise RpcError(types.INVALID_REQUEST, "method must be a non-empty string", request_id)
    if "params" in message and not isinstance(message["params"], dict | list):
        raise RpcError(types.INVALID_REQUEST, "params must be an object", request_id)


def _check_call(params: dict[str, Any], request_id: Any) -> None:
    if not isinstance(params.get("name"), str) or not params["name"]:
        raise RpcError(types.INVALID_PARAMS, "params.name must be the tool's name", request_id)
    if not isinstance(params.get("arguments", {}), dict):
        raise RpcError(types.INVALID_PARAMS, "params.arguments must be an object", request_id)
    if not isinstance(params.get("task", {}), dict):
        raise RpcError(types.INVALID_PARAMS, "params.task must be an object", request_id)


class Endpoint:
    """`/mcp`: the bearer key picks the tenant; every message is checked here (a malformed one
    answers a JSON-RPC error, never a 500); Tasks are answered here, the rest by the SDK."""

    def __init__(self, state: AppState, tasks: Tasks, sdk: ASGIApp) -> None:
        self.state, self.tasks, self.sdk = state, tasks, sdk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = await self._authorized(scope)
        if found is None:
            await _json_response(send, 401, {"error": "missing or unknown API key: send "
                                             "'Authorization: Bearer <key>'"},
                                 [(b"www-authenticate", b"Bearer")])
            return
        tenant = scope[TENANT] = found.key.tenant_id
        CALLING_KEY.set(found.key.key_id)  # the job records it (four-eyes approvals)
        body = await _body(receive)
        try:
            message = parse_message(body)
            await run_in_threadpool(self._admit, found, message)
        except RpcError as exc:
            status = 200 if exc.code == types.INVALID_PARAMS and exc.request_id is not None else 400
            await _json_response(send, status, exc.reply())
            return
        except (Forbidden, RateLimited) as exc:
            headers = exc.headers if isinstance(exc, RateLimited) else {}
            await _json_response(send, exc.status_code, RpcError(
                types.INVALID_REQUEST, str(exc), message.get("id")).reply(),
                [(k.lower().encode(), v.encode()) for k, v in headers.items()])
            return
        if self.tasks.handles(message):
            await _json_response(send, 200, await self._answer(tenant, message))
            return
        await self.sdk(scope, _replay(body), send)

    async def _authorized(self, scope: Scope) -> Authorized | None:
        headers = dict(scope.get("headers") or [])
        scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        return await run_in_threadpool(self.state.authorize, key.strip())

    def _admit(self, found: Authorized, message: dict[str, Any]) -> None:
        """The scope the method needs (api/scopes.py MCP_SCOPES), then the rate limits."""
        needed = MCP_SCOPES.get(str(message.get("method")))
        if needed is not None and needed not in found.key.scopes:
            raise Forbidden(lacks(needed))
        verdict = self.state.limiter.take(found.key.key_id, found.key.tenant_id, found.rates)
        if verdict is not None and not verdict.allowed:
            raise RateLimited(f"too many requests: retry after {verdict.retry_after} s",
                              verdict.headers())

    async def _answer(self, tenant: str, message: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message.get("id")}
        try:
            reply["result"] = await self.tasks.answer(tenant, message)
        except OrchestratorError as exc:
            reply["error"] = {"code": types.INVALID_PARAMS, "message": str(exc)}
        return reply


def http_endpoint(state: AppState) -> tuple[Endpoint, StreamableHTTPSessionManager]:
    """The `/mcp` endpoint of an API process and the session manager its lifespan runs."""
    backend = LocalBackend(state)
    server = build_server(backend, lambda ctx: str(ctx.request.scope[TENANT]),
                          state.settings.orchestrator.sync_timeout)
    server.serves_tasks = True
    # Stateless JSON: every request stands alone, so any API process (or a restarted one)
    # answers it; the bearer key, not a browser origin, authenticates it.
    manager = StreamableHTTPSessionManager(
        app=server, json_response=True, stateless=True,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    tasks = Tasks(backend, int(state.settings.api.mcp_task_ttl * 1000))
    return Endpoint(state, tasks, StreamableHTTPASGIApp(manager)), manager


async def serve_stdio(base_url: str, api_key: str, sync_timeout: float) -> None:
    """Serve the tools of the key's tenant over stdio, through the API at `base_url`."""
    from mcp.server.stdio import stdio_server

    async with httpx.AsyncClient(base_url=base_url, timeout=sync_timeout + 30, headers={
            "Authorization": f"Bearer {api_key}"}) as http:
        server = build_server(HttpBackend(http), lambda _: "", sync_timeout)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
