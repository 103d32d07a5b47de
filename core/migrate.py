"""Alembic migrations of the job store, run programmatically."""

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, secret_keys: list[str] | None = None) -> None:
    """Bring the job store at `database_url` to the newest schema.

    `secret_keys` seal what older versions stored in the clear (default:
    ORCHESTRATOR_SECRET_KEY, read only if there is any).
    """
    from core.db import Database

    Database(database_url).dispose()  # creates the SQLite folder and turns on WAL
    config = alembic_config(database_url)
    if secret_keys is not None:
        config.attributes["secret_keys"] = secret_keys
    command.upgrade(config, "head")
