"""limits and quotas: per-tenant concurrency limits and model budgets

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 15:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'concurrency_limits',
        sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('pattern', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('max_running', sa.Integer(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('tenant_id', 'pattern'),
    )
    op.create_table(
        'tenant_quotas',
        sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('day_usd', sa.Float(), nullable=False),
        sa.Column('month_usd', sa.Float(), nullable=False),
        sa.Column('day_tokens', sa.Integer(), nullable=False),
        sa.Column('month_tokens', sa.Integer(), nullable=False),
        sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('tenant_id'),
    )


def downgrade() -> None:
    op.drop_table('tenant_quotas')
    op.drop_table('concurrency_limits')
