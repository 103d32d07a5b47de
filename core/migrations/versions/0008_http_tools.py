"""HTTP tools registered per tenant

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 19:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'http_tools',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column('method', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column('url', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column('host', sqlmodel.sql.sqltypes.AutoString(length=253), nullable=False),
        sa.Column('headers', sa.JSON(), nullable=False),
        sa.Column('input_schema', sa.JSON(), nullable=False),
        sa.Column('timeout', sa.Float(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('tenant_id', 'name', name='uq_http_tools_tenant_name'),
    )
    op.create_index('ix_http_tools_tenant_id', 'http_tools', ['tenant_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_http_tools_tenant_id', table_name='http_tools')
    op.drop_table('http_tools')
