"""Chat sessions on both job stores: two tenants may use the same session id, and neither
sees the other's messages, through the API's list or the recent messages a chat plans with."""

import uuid

import pytest

from core.db import Database
from core.store.sessions import Turn, add_turns, list_messages, open_session, recent_messages
from core.store.tenants import create_tenant_key
from core.vault import Vault, new_key

SESSION = "shared-session-id"


@pytest.fixture
def db(own_store: Database) -> Database:
    return own_store


def _tenant_with_messages(db: Database, words: list[str]) -> str:
    """A new tenant whose session SESSION holds one user message per word."""
    with db.write() as session:
        tenant, _ = create_tenant_key(session=session, vault=Vault([new_key()]),
                                      tenant_name=f"t-{uuid.uuid4().hex[:8]}")
        tenant_id = tenant.id
    for word in words:
        with db.write() as session:
            open_session(session=session, tenant_id=tenant_id, session_id=SESSION)
            add_turns(session=session, tenant_id=tenant_id, session_id=SESSION,
                      job_id=f"job_{uuid.uuid4().hex[:12]}", turns=[Turn("user", word)])
    return tenant_id


def test_two_tenants_with_the_same_session_id_see_only_their_own_messages(db: Database) -> None:
    # Given two tenants who both named a session SESSION, the second writing last
    first = _tenant_with_messages(db, ["first-a", "first-b"])
    second = _tenant_with_messages(db, ["second-a", "second-b", "second-c"])
    for tenant, own in ((first, ["first-a", "first-b"]),
                        (second, ["second-a", "second-b", "second-c"])):
        with db.read() as session:
            # Then the list (GET /v1/sessions/{id}/messages) holds only the tenant's own
            listed = list_messages(session=session, tenant_id=tenant, session_id=SESSION,
                                   after=0, limit=100)
            # And so do the recent messages a chat plans with
            recent = recent_messages(session=session, tenant_id=tenant, session_id=SESSION,
                                     limit=10)
            assert [m.content for m in listed] == own
            assert [m.content for m in recent] == own
            assert {m.tenant_id for m in [*listed, *recent]} == {tenant}
