"""Chat sessions and their messages: a tenant's conversations, read back into planning.

Writes are keyed by the job that made them, so a step that runs again adds nothing twice.
"""

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.errors import NotFound
from core.models import ChatMessage, ChatSession, utcnow


@dataclass(frozen=True)
class Turn:
    """A message to add: its role, text and any structured data (a tool step's output)."""

    role: str
    content: str
    data: dict[str, Any] | None = None


def open_session(*, session: Session, tenant_id: str, session_id: str,
                 twin_id: str | None = None, user_id: str | None = None,
                 namespace: str | None = None) -> ChatSession:
    """The tenant's session `session_id`, created on first use; the ids given are kept."""
    row = session.get(ChatSession, (tenant_id, session_id))
    if row is None:
        row = ChatSession(tenant_id=tenant_id, id=session_id)
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # a concurrent first message created it
            row = session.get_one(ChatSession, (tenant_id, session_id))
    row.twin_id = twin_id or row.twin_id
    row.user_id = user_id or row.user_id
    row.namespace = namespace or row.namespace
    row.updated_at = utcnow()
    session.add(row)
    return row


def _has(session: Session, tenant_id: str, job_id: str, role: str) -> bool:
    found = session.exec(select(ChatMessage.id).where(
        ChatMessage.tenant_id == tenant_id, ChatMessage.job_id == job_id,
        ChatMessage.role == role).limit(1)).first()
    return found is not None


def add_turns(*, session: Session, tenant_id: str, session_id: str, job_id: str,
              turns: list[Turn]) -> bool:
    """Add a job's messages once: nothing if that job already added its first turn's role."""
    if not turns or _has(session, tenant_id, job_id, turns[0].role):
        return False
    for turn in turns:
        session.add(ChatMessage(tenant_id=tenant_id, session_id=session_id, job_id=job_id,
                                role=turn.role, content=turn.content, data=turn.data or {}))
    return True


def recent_messages(*, session: Session, tenant_id: str, session_id: str, limit: int,
                    exclude_job: str | None = None) -> list[ChatMessage]:
    """The session's last `limit` messages (not those of `exclude_job`), oldest first."""
    if limit <= 0:
        return []
    query = select(ChatMessage).where(ChatMessage.tenant_id == tenant_id,
                                      ChatMessage.session_id == session_id)
    if exclude_job is not None:
        query = query.where(col(ChatMessage.job_id).is_distinct_from(exclude_job))
    rows = session.exec(query.order_by(col(ChatMessage.id).desc()).limit(limit))
    return list(reversed(list(rows)))


def get_session(*, session: Session, tenant_id: str, session_id: str) -> ChatSession:
    """A tenant's session; another tenant's does not exist."""
    row = session.get(ChatSession, (tenant_id, session_id))
    if row is None:
        raise NotFound(f"session {session_id} not found")
    return row


def list_messages(*, session: Session, tenant_id: str, session_id: str, after: int,
                  limit: int) -> list[ChatMessage]:
    """A session's messages with an id above `after`, oldest first."""
    get_session(session=session, tenant_id=tenant_id, session_id=session_id)
    return list(session.exec(
        select(ChatMessage).where(ChatMessage.tenant_id == tenant_id,
                                  ChatMessage.session_id == session_id,
                                  col(ChatMessage.id) > after)
        .order_by(col(ChatMessage.id)).limit(limit)))


def list_sessions(*, session: Session, tenant_id: str, limit: int) -> list[ChatSession]:
    """A tenant's sessions, the most recently used first."""
    return list(session.exec(
        select(ChatSession).where(ChatSession.tenant_id == tenant_id)
        .order_by(col(ChatSession.updated_at).desc(), col(ChatSession.id)).limit(limit)))
