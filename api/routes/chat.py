"""Chat: `POST /chat` (reference 000), `POST /v1/chat` (reference 002) and a WebSocket."""

import asyncio
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from api import conversation, service, streaming
from api.deps import StateDep, TenantDep
from api.openapi import BODY, KEYED, errors
from api.schemas import ChatAnswer, ChatRequest, IdempotencyKey, V1ChatRequest, loads_checked
from api.scopes import lacks
from api.state import AppState, Authorized
from core.errors import OrchestratorError
from core.models import Scope

router = APIRouter(tags=["chat"])
CHAT_DESCRIPTION = (
    "The message becomes a prompt job: the `llm` pool plans it into steps (memory, tools…), "
    "they run, and `llm.respond` answers. Waits up to ORCHESTRATOR_SYNC_TIMEOUT; a slower "
    "job answers `status: accepted` with its `job_id` (follow `/v1/jobs/{job_id}`).")
UNAUTHORIZED = 4401
FORBIDDEN = 4403


@router.post("/chat", operation_id="chat", response_model=ChatAnswer,
             summary="Chat (reference 000)", responses=errors(*KEYED, *BODY, 402),
             description=CHAT_DESCRIPTION)
async def chat(body: ChatRequest, state: StateDep, tenant: TenantDep,
               idempotency_key: IdempotencyKey = None) -> ChatAnswer:
    """Send a chat message and get the answer (reference 000's contract)."""
    session_id = body.session_id or conversation.new_session_id()
    req = conversation.request(tenant, body.message, {
        "session_id": session_id, "twin_id": body.twin_id, "namespace": body.namespace},
        {}, idempotency_key)
    return await conversation.ask(state, req, state.settings.orchestrator.sync_timeout)


@router.post("/v1/chat", operation_id="chatV1", response_model=ChatAnswer,
             summary="Chat (reference 002)", responses=errors(*KEYED, *BODY, 402),
             description=CHAT_DESCRIPTION)
async def chat_v1(body: V1ChatRequest, state: StateDep, tenant: TenantDep,
                  idempotency_key: IdempotencyKey = None) -> ChatAnswer:
    """Send a prompt and get the answer (reference 002's contract)."""
    meta = body.metadata
    req = conversation.request(tenant, body.prompt, {
        "session_id": str(meta.get("session_id") or conversation.new_session_id()),
        "user_id": body.user_id, "namespace": meta.get("namespace")}, meta, idempotency_key)
    return await conversation.ask(state, req, state.settings.orchestrator.sync_timeout)


AUTH_WAIT = 3.0  # seconds a socket without a key in its handshake has to send one


def _key(socket: WebSocket) -> str:
    header = socket.headers.get("authorization", "")
    return header.removeprefix("Bearer ").strip() or socket.query_params.get("api_key", "")


async def _first_message_key(socket: WebSocket) -> str:
    """The key of an opening `{"type": "auth", "api_key": …}` message (a browser cannot set a
    WebSocket's headers, and a key in the URL would be logged); "" for anything else."""
    try:
        text = await asyncio.wait_for(_receive(socket), timeout=AUTH_WAIT)
        body = loads_checked(text)
    except (TimeoutError, ValueError):
        return ""
    if isinstance(body, dict) and body.get("type") == "auth":
        key = body.get("api_key")
        return key if isinstance(key, str) else ""
    return ""


@router.websocket("/v1/chat/ws")
async def chat_socket(socket: WebSocket) -> None:
    """Chat over a WebSocket: each message sent gets its job's events, then the answer.

    Authenticate with `Authorization: Bearer <key>`, `?api_key=<key>`, or (what a browser can
    do without putting the key in a URL) a first message `{"type": "auth", "api_key": <key>}`
    within 3 seconds, answered `{"type": "authenticated"}`. Send
    `{"message", "session_id"?, "namespace"?, "twin_id"?}`; receive `{"type": "accepted"}`,
    every event of the job (as `GET /v1/jobs/{id}/events` shows them, `llm_delta` carrying
    the answer as it is written), then `{"type": "answer", …}`. Several messages per connection.
    A message that is not such JSON (or nested too deep) gets `{"type": "error", "error"}` and
    the socket goes on; one over API_MAX_BODY_BYTES closes it with 1009. A bad key: the socket
    is accepted, then closed with 4401; a key without `jobs:write`, with 4403. The socket keeps
    one session (its first message's `session_id`, or a new one) unless a message names
    another.
    """
    state: AppState = socket.app.state.orch
    # Accept first: a close before the handshake is an HTTP 403 no client can tell from others.
    await socket.accept()
    try:
        found = await _authorized(state, socket)
    except WebSocketDisconnect:
        return
    if found is None:
        await socket.close(code=UNAUTHORIZED, reason="missing or unknown API key")
        return
    if Scope.jobs_write not in found.key.scopes:
        await socket.close(code=FORBIDDEN, reason=lacks(Scope.jobs_write))
        return
    tenant = found.key.tenant_id
    session_id = conversation.new_session_id()
    try:
        while True:
            session_id = await _one_message(state, socket, tenant, await _receive(socket),
                                            session_id)
    except WebSocketDisconnect:
        return


async def _authorized(state: AppState, socket: WebSocket) -> Authorized | None:
    """The handshake's key, else the opening auth message's."""
    if key := _key(socket):
        return await run_in_threadpool(state.authorize, key)
    key = await _first_message_key(socket)
    found = await run_in_threadpool(state.authorize, key) if key else None
    if found is not None:
        await socket.send_json({"type": "authenticated"})
    return found


async def _receive(socket: WebSocket) -> str | bytes:
    """The next message, text or binary (`receive_text` fails on a binary frame)."""
    message = await socket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    return message.get("text") or message.get("bytes") or ""


async def _one_message(state: AppState, socket: WebSocket, tenant: str,
                       text: str | bytes, current: str) -> str:
    """Answer one message; the session the socket goes on with (the one it named)."""
    try:
        # The depth and finite-number rule of every JSON body, so a deep message is refused
        # with a reason instead of overflowing the parser and dropping the socket.
        body = ChatRequest.model_validate(loads_checked(text))
    except (ValueError, ValidationError) as exc:
        await socket.send_json({"type": "error", "error": f"invalid message: {exc}"})
        return current
    session_id = body.session_id or current
    req = conversation.request(tenant, body.message, {
        "session_id": session_id, "twin_id": body.twin_id, "namespace": body.namespace},
        {}, None)
    try:
        await conversation.check_prompt(state, req)
        job, _, _ = await service.submit(state, req, 0)
    except OrchestratorError as exc:
        await socket.send_json({"type": "error", "error": str(exc)})
        return session_id
    await socket.send_json({"type": "accepted", "job_id": job.id, "session_id": session_id})
    async for event in streaming.follow(state, job.id, 0):
        await socket.send_json(event)
    done, steps = await run_in_threadpool(service.load_job, state, tenant, job.id)
    reply: dict[str, Any] = {"type": "answer", **conversation.answer(done, steps).model_dump()}
    await socket.send_json(reply)
    return session_id
