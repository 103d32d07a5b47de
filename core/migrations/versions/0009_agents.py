"""agents: external agents registered per tenant

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 18:30:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'agents',
        sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('agent_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('endpoint', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('tenant_id', 'agent_id'),
    )


def downgrade() -> None:
    op.drop_table('agents')
