"""A real SQLite job store per test (no services needed)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.db import Database
from core.migrate import upgrade
from core.settings import get_settings
from core.store.tenants import create_tenant_key
from core.vault import Vault, new_key
from tasks.engine.resources import Resources
from tasks.intents import REGISTRY
from tests.unit.keys import VAULT


@pytest.fixture(scope="session", autouse=True)
def registry_resources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resources]:
    """The registry's providers read tenants' tools and agents from a real (empty) SQLite
    store, not var/; Redis is a client that is never connected (no MCP servers here)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('tools')}/store.db"
    upgrade(url)
    resources = Resources(settings=get_settings(), db=Database(url),
                          redis=redis.Redis(port=1), runner="test:0", vault=Vault([new_key()]))
    REGISTRY.bind(resources)
    yield resources
    resources.close()


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
        created, _ = create_tenant_key(session=session, vault=VAULT,
                                       tenant_name="acme")
        return created.id
