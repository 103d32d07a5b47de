"""sealed secrets: webhook secrets widened for their sealed form; plaintext secrets sealed

Approval and resume tokens in `step_held` / `step_waiting` events, HTTP tools' header values
and tenants' webhook secrets written before sealing began are sealed with the first
ORCHESTRATOR_SECRET_KEY (needed only when there are such rows). The read path still accepts a
plaintext value, so a row an older process writes during a rolling deploy keeps working until
`orchestrator secrets rotate` seals it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 10:00:00
"""
from alembic import context, op
import sqlalchemy as sa
import sqlmodel

from core.settings import OrchestratorSettings
from core.store.sealing import reseal
from core.vault import Vault, is_sealed


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None
COLUMNS = ('webhook_secret', 'previous_webhook_secret')


def _width(length: int) -> None:
    with op.batch_alter_table('tenants') as batch_op:
        for column in COLUMNS:
            batch_op.alter_column(column, type_=sqlmodel.sql.sqltypes.AutoString(length=length),
                                  existing_nullable=column.startswith('previous'))


def upgrade() -> None:
    _width(512)
    vaults: list[Vault] = []

    def seal(value: str) -> str | None:
        if is_sealed(value):
            return None
        if not vaults:  # a key is needed only when there is something to seal
            keys = context.config.attributes.get('secret_keys')
            vaults.append(Vault(keys if keys is not None else
                                OrchestratorSettings().secret_key))
        return vaults[0].seal(value)

    reseal(op.get_bind(), seal)


def downgrade() -> None:
    # Sealed values stay sealed, and so the columns stay wide enough to hold them: a downgrade
    # never writes secrets out in the clear.
    pass
