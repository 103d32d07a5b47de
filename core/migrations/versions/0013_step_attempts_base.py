"""job_steps.attempts_base: the attempts a step had when its job was last retried

A retried job's steps keep counting attempts; the poison limit counts the deliveries made since
the retry, so an operator's retry never fails a step as poison for attempts made before it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_steps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts_base', sa.Integer(), nullable=False,
                                      server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('job_steps', schema=None) as batch_op:
        batch_op.drop_column('attempts_base')
