"""Secrets at rest: sealed with the first key, opened with any, re-sealed on rotation, and the
plaintext rows of before sealed by the migration."""

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from core import deliveries
from core.db import Database
from core.errors import ConfigError
from core.migrate import alembic_config, upgrade
from core.models import HttpTool, Tenant
from core.store.events import append_events
from core.store.queries import list_events
from core.store.sealing import reseal
from core.store.tenants import create_tenant_key
from core.store.tools import list_tools, save_tool
from core.store.waits import reveal
from core.vault import Vault, new_key
from tests.unit.test_store import submit

BEARER = "Bearer crm-live-0123456789"
TOKEN = "apv_the-approval-token"
WHSEC = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTAxMjM0NTY3OA=="


def test_a_sealed_value_opens_to_itself_and_shows_nothing_of_it() -> None:
    vault = Vault([new_key()])
    sealed = vault.seal(BEARER)
    assert sealed.startswith("fernet:") and "crm-live" not in sealed
    assert vault.open(sealed) == BEARER


def test_a_plaintext_value_written_before_sealing_is_read_as_it_is() -> None:
    assert Vault([new_key()]).open(BEARER) == BEARER


def test_no_key_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="ORCHESTRATOR_SECRET_KEY"):
        Vault([])


def test_a_value_sealed_with_a_removed_key_says_so() -> None:
    sealed = Vault([new_key()]).seal(BEARER)
    with pytest.raises(ConfigError, match="rotate"):
        Vault([new_key()]).open(sealed)


def test_rotation_reseals_every_stored_secret_with_the_new_key(db: Database,
                                                              tenant: str) -> None:
    # Given secrets sealed with the old key: a tool's header and the webhook secret
    old, new = new_key(), new_key()
    before = Vault([old])
    with db.write() as session:
        save_tool(session=session, vault=before, tool=HttpTool(
            tenant_id=tenant, name="crm", method="POST", url="https://crm.example/x",
            host="crm.example", headers={"authorization": BEARER}))
        session.get_one(Tenant, tenant).webhook_secret = before.seal(WHSEC)
    # When the new key is put first and everything is re-sealed
    rotating = Vault([new, old])
    with db.write() as session:
        assert reseal(session.connection(), rotating.reseal) == 2
    # Then the new key alone opens them
    after = Vault([new])
    with db.read() as session:
        [tool] = list_tools(session=session, tenant_id=tenant)
        assert after.open(tool.headers["authorization"]) == BEARER
        assert deliveries.signing_secrets(session=session, tenant_id=tenant,
                                          vault=after) == [WHSEC]


def copy_rows(source: str, target: str, names: set[str]) -> None:
    """Copy the rows of `source`'s tables `names` into the same tables of `target` (an older
    revision), the columns both have: the rows of today's models as an older store held them."""
    old, new = sa.create_engine(target), sa.create_engine(source)
    tables, current = sa.MetaData(), sa.MetaData()
    tables.reflect(old)
    current.reflect(new)
    with new.connect() as reading, old.begin() as writing:
        for table in tables.sorted_tables:
            if table.name not in names:
                continue
            columns = [c.name for c in table.columns if c.name in current.tables[table.name].c]
            rows = reading.execute(sa.select(*(current.tables[table.name].c[c] for c in columns)))
            values = [dict(row._mapping) for row in rows]
            if values:
                writing.execute(table.insert(), values)
    old.dispose()
    new.dispose()


def test_the_migration_seals_what_was_stored_in_the_clear(tmp_path: Path) -> None:
    # Given a job store of revision 0009 with a token, a tool header and a webhook secret
    # stored in the clear (written with today's models, then copied into the old tables)
    url, scratch = f"sqlite:///{tmp_path}/old.db", f"sqlite:///{tmp_path}/scratch.db"
    Database(url).dispose()
    command.upgrade(alembic_config(url), "0009")
    upgrade(scratch)
    db = Database(scratch)
    with db.write() as session:
        # (a tenant without keys: the key table has columns of later revisions)
        created = Tenant(id="ten_old", name="old", webhook_secret=WHSEC)
        session.add(created)
        session.flush()
        session.add(HttpTool(tenant_id=created.id, name="crm", method="POST",
                             url="https://crm.example/x", host="crm.example",
                             headers={"authorization": BEARER}))
    job_id, _ = submit(db, created.id)
    with db.write() as session:
        append_events(session=session, job_id=job_id,
                            items=[("step_held", {"index": 0, "token": TOKEN})])
    db.dispose()
    copy_rows(scratch, url, {"tenants", "api_keys", "http_tools", "jobs", "job_steps",
                             "job_events"})
    db = Database(url)
    # When it is upgraded with a key
    key = new_key()
    upgrade(url, [key])
    vault = Vault([key])
    # Then nothing is left in the clear, and each value opens to what it was
    with db.read() as session:
        tenant = session.get_one(Tenant, created.id)
        [tool] = list_tools(session=session, tenant_id=created.id)
        [event] = list_events(session=session, job_id=job_id, after=0, limit=10)[-1:]
    stored = f"{tenant.webhook_secret} {tool.headers} {event.data}"
    assert WHSEC not in stored and BEARER not in stored and TOKEN not in stored
    assert reveal(event.type, event.data, vault)["token"] == TOKEN
    assert vault.open(tool.headers["authorization"]) == BEARER
    db.dispose()


def test_a_tenant_has_its_webhook_secret_sealed_from_its_creation(db: Database) -> None:
    # When a tenant is created
    vault = Vault([new_key()])
    with db.write() as session:
        created, _ = create_tenant_key(session=session, vault=vault, tenant_name="fresh")
    # Then its signing secret exists already (reading it later writes nothing), sealed
    with db.read() as session:
        stored = session.get_one(Tenant, created.id).webhook_secret
        secrets = deliveries.signing_secrets(session=session, tenant_id=created.id, vault=vault)
    assert stored.startswith("fernet:") and secrets[0].startswith("whsec_")
    assert secrets[0] not in stored


def test_the_migration_gives_a_tenant_without_a_secret_one(tmp_path: Path) -> None:
    # Given a job store of revision 0010 with a tenant that never got its secret
    url = f"sqlite:///{tmp_path}/old.db"
    Database(url).dispose()
    command.upgrade(alembic_config(url), "0010")
    db = Database(url)
    with db.write() as session:
        session.add(Tenant(id="ten_old", name="old"))
    # When it is upgraded
    key = new_key()
    upgrade(url, [key])
    # Then the tenant has a sealed secret the key opens
    with db.read() as session:
        [secret] = deliveries.signing_secrets(session=session, tenant_id="ten_old",
                                              vault=Vault([key]))
    assert secret.startswith("whsec_")
    db.dispose()
