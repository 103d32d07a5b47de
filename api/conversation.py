"""Chat on top of jobs: a message is a prompt job in a session; its answer in the contracts' shape.

`POST /chat` (reference 000), `POST /v1/chat` (reference 002) and the chat WebSocket share it.
"""

import uuid
from typing import Any

from fastapi.concurrency import run_in_threadpool

from api import service
from api.schemas import PROMPT_INTENT, ChatAnswer
from api.state import AppState
from core.models import Job, JobStatus, JobStep
from tasks.llm import check_fits

CHAT_STATUS = {JobStatus.succeeded: "completed", JobStatus.failed: "failed",
               JobStatus.cancelled: "cancelled"}


def new_session_id() -> str:
    return f"ses_{uuid.uuid4().hex}"


def request(tenant_id: str, prompt: str, chat: dict[str, Any], context: dict[str, Any],
            idempotency_key: str | None) -> service.Request:
    """A chat message as a prompt job; each message is a new job unless the key repeats."""
    inputs = {"prompt": prompt, **{k: v for k, v in chat.items() if v is not None}}
    return service.Request(
        tenant_id=tenant_id, intent=PROMPT_INTENT, inputs=inputs, mode="auto", context=context,
        callback_url=None, idempotency_key=idempotency_key or f"chat-{uuid.uuid4().hex}",
        internal=True)


async def check_prompt(state: AppState, req: service.Request) -> None:
    """A 422 (InvalidRequest) for a prompt too long for the model's context even alone."""
    if req.intent == PROMPT_INTENT and isinstance(req.inputs.get("prompt"), str):
        await run_in_threadpool(check_fits, state.resources, req.inputs["prompt"])


async def ask(state: AppState, req: service.Request, wait: float) -> ChatAnswer:
    """Submit a chat message and wait up to `wait` seconds for its answer."""
    await check_prompt(state, req)
    job, steps, _ = await service.submit(state, req, wait)
    return answer(job, steps)


def answer(job: Job, steps: list[JobStep]) -> ChatAnswer:
    """The chat contracts' answer: the response text, the actions taken, the status."""
    status = CHAT_STATUS.get(job.status, "accepted")
    result = job.result if isinstance(job.result, dict) else {}
    text = result.get("response") or (job.error if job.status.terminal else "") or ""
    actions = result.get("actions") or [
        f"{s.intent}: {s.status}" for s in steps if s.intent not in ("llm.plan", "llm.respond")]
    return ChatAnswer(response=str(text), job_id=job.id, actions_taken=list(actions),
                      status=status, session_id=job.inputs.get("session_id"),
                      fallback=bool(result.get("fallback", False)))
