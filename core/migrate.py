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


def upgrade(database_url: str) -> None:
    """Bring the job store at `database_url` to the newest schema."""
    from core.db import Database

    Database(database_url).dispose()  # creates the SQLite folder and turns on WAL
    command.upgrade(alembic_config(database_url), "head")
