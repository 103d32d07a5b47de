"""key scopes and limits: keys get a name, scopes, last use and an expiry; tenants their limits

Existing keys keep the rights they had: every scope but `operator`, and `operator` too for
the keys of operator tenants. `tenant_limits` holds per-tenant rate overrides.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 15:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

EVERYONE = 'jobs:write jobs:read approve registry:write memory:write admin'


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(200), server_default='',
                                      nullable=False))
        batch_op.add_column(sa.Column('scopes', sa.String(200), server_default='',
                                      nullable=False))
        for column in ('last_used_at', 'expires_at'):
            batch_op.add_column(sa.Column(column, sqlmodel.sql.sqltypes.UTCDateTime(),
                                          nullable=True))
    keys = sa.table('api_keys', sa.column('tenant_id', sa.String),
                    sa.column('scopes', sa.String))
    tenants = sa.table('tenants', sa.column('id', sa.String), sa.column('operator', sa.Boolean))
    operators = sa.select(tenants.c.id).where(tenants.c.operator.is_(sa.true()))
    op.execute(keys.update().values(scopes=EVERYONE))
    op.execute(keys.update().where(keys.c.tenant_id.in_(operators))
               .values(scopes=EVERYONE + ' operator'))
    op.create_table(
        'tenant_limits',
        sa.Column('tenant_id', sa.String(64), sa.ForeignKey('tenants.id'), primary_key=True),
        sa.Column('key_rate', sa.Float(), nullable=True),
        sa.Column('key_burst', sa.Integer(), nullable=True),
        sa.Column('tenant_rate', sa.Float(), nullable=True),
        sa.Column('tenant_burst', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_table('tenant_limits')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        for column in ('expires_at', 'last_used_at', 'scopes', 'name'):
            batch_op.drop_column(column)
