"""memory: items with embeddings and full-text search, per tenant and namespace

Postgres: pgvector's `vector` column with an HNSW index (cosine) per dimension (256 here, the
embedded WordLlama's; the store adds one for another dimension when it first writes one), and a
generated `tsvector` with a GIN index. SQLite: the vector as float32 bytes (searched exactly)
and an FTS5 table kept by triggers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 19:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

SQLITE_FTS = (
    "CREATE VIRTUAL TABLE memory_fts USING fts5(scope, text, tokenize='porter unicode61')",
    "CREATE TRIGGER memory_items_fts_insert AFTER INSERT ON memory_items BEGIN "
    "INSERT INTO memory_fts(rowid, scope, text) VALUES (new.key, new.scope, new.text); END",
    "CREATE TRIGGER memory_items_fts_delete AFTER DELETE ON memory_items BEGIN "
    "DELETE FROM memory_fts WHERE rowid = old.key; END",
)
POSTGRES_SEARCH = (
    "ALTER TABLE memory_items ADD COLUMN tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
    "CREATE INDEX ix_memory_items_tsv ON memory_items USING gin (tsv)",
    "CREATE INDEX ix_memory_items_hnsw_256 ON memory_items USING hnsw "
    "((embedding::vector(256)) vector_cosine_ops) WHERE dim = 256",
)


def _embedding_type(postgres: bool) -> sa.types.TypeEngine:
    if postgres:
        from pgvector.sqlalchemy import VECTOR
        return VECTOR()
    return sa.LargeBinary()


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    if postgres:
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        'memory_items',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column('key', sa.BigInteger(), nullable=False),
        sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('namespace', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('tags', sa.JSON(), nullable=False),
        sa.Column('metadata', sa.JSON(), nullable=False),
        sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('dim', sa.Integer(), nullable=False),
        sa.Column('embedding', _embedding_type(postgres), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('key'),
    )
    op.create_index('ix_memory_items_scope_model', 'memory_items', ['scope', 'model'])
    op.create_index('ix_memory_items_tenant_id', 'memory_items', ['tenant_id'])
    op.create_table(
        'memory_scopes',
        sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('namespace', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('dim', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('scope'),
    )
    op.create_index('ix_memory_scopes_tenant_id', 'memory_scopes', ['tenant_id'])
    for statement in POSTGRES_SEARCH if postgres else SQLITE_FTS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS memory_items_fts_delete")
        op.execute("DROP TRIGGER IF EXISTS memory_items_fts_insert")
        op.execute("DROP TABLE IF EXISTS memory_fts")
    op.drop_index('ix_memory_scopes_tenant_id', table_name='memory_scopes')
    op.drop_table('memory_scopes')
    op.drop_index('ix_memory_items_tenant_id', table_name='memory_items')
    op.drop_index('ix_memory_items_scope_model', table_name='memory_items')
    op.drop_table('memory_items')
