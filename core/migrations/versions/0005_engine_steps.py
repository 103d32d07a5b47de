"""the engine: steps that wait (held, waiting), runners, plans that grow

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 18:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


NEW_VALUES = (('jobstatus', 'waiting'), ('stepstatus', 'held'), ('stepstatus', 'waiting'))


def _add_enum_values() -> None:
    """Postgres keeps the states as enum types: add the new ones (SQLite has no types)."""
    if op.get_bind().dialect.name != 'postgresql':
        return
    for enum, value in NEW_VALUES:
        op.execute(f"ALTER TYPE {enum} ADD VALUE IF NOT EXISTS '{value}'")


def upgrade() -> None:
    _add_enum_values()
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('step_count')
    with op.batch_alter_table('job_steps', schema=None) as batch_op:
        batch_op.drop_column('task')
        batch_op.add_column(sa.Column('runner', sqlmodel.sql.sqltypes.AutoString(length=200),
                                      nullable=True))
        batch_op.add_column(sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=True))
        batch_op.add_column(sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('deadline', sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
        batch_op.add_column(sa.Column('approved_at', sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
        batch_op.add_column(sa.Column('early_output', sa.JSON(), nullable=True))
        batch_op.create_index('ix_job_steps_token_hash', ['token_hash'], unique=False)
        batch_op.create_index('ix_job_steps_status', ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job_steps', schema=None) as batch_op:
        batch_op.drop_index('ix_job_steps_status')
        batch_op.drop_index('ix_job_steps_token_hash')
        for column in ('early_output', 'approved_at', 'deadline', 'token_hash', 'reason',
                       'runner'):
            batch_op.drop_column(column)
        batch_op.add_column(sa.Column('task', sqlmodel.sql.sqltypes.AutoString(length=200),
                                      nullable=False, server_default=''))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('step_count', sa.Integer(), nullable=False,
                                      server_default='0'))
