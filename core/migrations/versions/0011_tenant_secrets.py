"""tenant secrets: every tenant has its webhook signing secret from its creation

Tenants created before got theirs when their first callback was signed or the secret was first
read; those still without one get a sealed new secret now (the key is needed only then), so
reading the secret never writes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 12:50:00
"""
from alembic import context, op
import sqlalchemy as sa

from core.deliveries import new_secret
from core.settings import OrchestratorSettings
from core.vault import Vault


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    tenants = sa.table('tenants', sa.column('id', sa.String), sa.column('webhook_secret',
                                                                         sa.String))
    missing = [row.id for row in bind.execute(sa.select(tenants.c.id).where(sa.or_(
        tenants.c.webhook_secret.is_(None), tenants.c.webhook_secret == '')))]
    if not missing:
        return
    keys = context.config.attributes.get('secret_keys')
    vault = Vault(keys if keys is not None else OrchestratorSettings().secret_key)
    for tenant_id in missing:
        bind.execute(tenants.update().where(tenants.c.id == tenant_id)
                     .values(webhook_secret=vault.seal(new_secret())))


def downgrade() -> None:
    pass
