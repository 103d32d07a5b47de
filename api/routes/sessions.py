"""`/v1/sessions`: a conversation's messages (reference 003)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import StateDep, TenantDep
from api.openapi import KEYED, errors
from api.schemas import MessagePublic, SessionMessages, SessionPublic
from core.store import sessions as chats

MAX_MESSAGE_ID = 2**31 - 1  # chat_messages.id is an INTEGER column on Postgres
router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.get("/{session_id}/messages", operation_id="getSessionMessages",
            response_model=SessionMessages, summary="A session's messages",
            responses=errors(*KEYED, 404, 422),
            description="User messages, the steps' results (`tool`) and the answers "
            "(`assistant`), oldest first; another tenant's session is a 404.")
def get_session_messages(
    session_id: Annotated[str, Path(max_length=128, description="The session's id.")],
    state: StateDep, tenant: TenantDep,
    after: Annotated[int, Query(ge=0, le=MAX_MESSAGE_ID,
                                description="Only messages with a higher id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many.")] = 100,
) -> SessionMessages:
    """A session's messages."""
    with state.db.read() as session:
        row = chats.get_session(session=session, tenant_id=tenant, session_id=session_id)
        messages = chats.list_messages(session=session, tenant_id=tenant,
                                       session_id=session_id, after=after, limit=limit)
        return SessionMessages(
            session_id=row.id, twin_id=row.twin_id, user_id=row.user_id,
            namespace=row.namespace,
            messages=[MessagePublic.model_validate(m, from_attributes=True) for m in messages])


@router.get("", operation_id="listSessions", response_model=list[SessionPublic],
            summary="List sessions", responses=errors(*KEYED, 422))
def list_sessions(
    state: StateDep, tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many.")] = 50,
) -> list[SessionPublic]:
    """The caller's chat sessions, the most recently used first."""
    with state.db.read() as session:
        rows = chats.list_sessions(session=session, tenant_id=tenant, limit=limit)
        return [SessionPublic.model_validate(row, from_attributes=True) for row in rows]
