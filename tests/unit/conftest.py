"""A real SQLite job store per test (no services needed)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from core import store
from core.db import Database
from core.migrate import upgrade


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/store.db"
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture
def tenant(db: Database) -> str:
    with db.write() as session:
        created, _ = store.create_tenant_key(session=session, tenant_name="acme")
        return created.id
