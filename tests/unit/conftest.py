"""A real SQLite job store per test (no services needed)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from core import store
from core.db import Database
from core.migrate import upgrade
from tasks.intents import TOOLS


@pytest.fixture(scope="session", autouse=True)
def tools_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The registry reads tenants' HTTP tools from a real (empty) SQLite store, not var/."""
    url = f"sqlite:///{tmp_path_factory.mktemp('tools')}/store.db"
    upgrade(url)
    database = Database(url)
    TOOLS._database = lambda: database
    yield
    database.dispose()


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
