"""chat sessions and their messages

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'chat_sessions',
        sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('twin_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('namespace', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('tenant_id', 'id'),
    )
    op.create_table(
        'chat_messages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('session_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('content', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_chat_messages_session', 'chat_messages',
                    ['tenant_id', 'session_id', 'id'], unique=False)
    op.create_index('ix_chat_messages_job_id', 'chat_messages', ['job_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_chat_messages_job_id', table_name='chat_messages')
    op.drop_index('ix_chat_messages_session', table_name='chat_messages')
    op.drop_table('chat_messages')
    op.drop_table('chat_sessions')
