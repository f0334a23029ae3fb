"""knowledge collections

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 16:40:00.000000

The team's documents, cut into passages, and the sources an answer cited. Keyword search needs
what the models cannot describe, so it is written here by hand and hidden from `alembic check`
(migrations/env.py): on SQLite an FTS5 index over the passages, kept current by triggers; on
Postgres a stored tsvector column (heading weighted above text) under a GIN index. The vector
tables (`knowledge_vec_<dimensions>`) are made at run time, when an embedding model first says
how many dimensions it has; a downgrade drops them too.

A later migration that rebuilds `knowledge_chunks` on SQLite (a batch ALTER copies the table)
drops its triggers: it must create them again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# `collection_id` is indexed too (as a word, its number): a search names its collections in the
# MATCH, so FTS5 ranks only their passages.
_SQLITE_SEARCH = (
    "CREATE VIRTUAL TABLE knowledge_fts USING fts5(heading, text, collection_id, "
    "content='knowledge_chunks', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER knowledge_fts_insert AFTER INSERT ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_fts(rowid, heading, text, collection_id) "
    "VALUES (new.id, new.heading, new.text, new.collection_id); "
    "END",
    "CREATE TRIGGER knowledge_fts_delete AFTER DELETE ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, heading, text, collection_id) "
    "VALUES ('delete', old.id, old.heading, old.text, old.collection_id); "
    "END",
    "CREATE TRIGGER knowledge_fts_update "
    "AFTER UPDATE OF heading, text, collection_id ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, heading, text, collection_id) "
    "VALUES ('delete', old.id, old.heading, old.text, old.collection_id); "
    "INSERT INTO knowledge_fts(rowid, heading, text, collection_id) "
    "VALUES (new.id, new.heading, new.text, new.collection_id); "
    "END",
)
_POSTGRES_SEARCH = (
    "ALTER TABLE knowledge_chunks ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
    "setweight(to_tsvector('english', heading), 'A') || "
    "setweight(to_tsvector('english', \"text\"), 'B')) STORED",
    "CREATE INDEX ix_knowledge_chunks_search ON knowledge_chunks USING gin (search_vector)",
)


def upgrade() -> None:
    _create_tables()
    dialect = op.get_bind().dialect.name
    for statement in _SQLITE_SEARCH if dialect == "sqlite" else _POSTGRES_SEARCH:
        op.execute(statement)


def _create_tables() -> None:
    op.create_table(
        "knowledge_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("surface", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("collection", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("platform", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("workspace", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("knowledge_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_knowledge_audit_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_knowledge_audit_collection"), ["collection"], unique=False
        )

    op.create_table(
        "knowledge_collections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("path", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("link", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("origin", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("embedding_model", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("dimensions", sa.Integer(), nullable=True),
        sa.Column("synced_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "knowledge_bindings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("platform", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("workspace", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.ForeignKeyConstraint(["collection_id"], ["knowledge_collections.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "collection_id", "scope", "platform", "workspace", "channel", name="uq_knowledge_bind"
        ),
    )
    with op.batch_alter_table("knowledge_bindings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_knowledge_bindings_collection_id"), ["collection_id"], unique=False
        )

    op.create_table(
        "knowledge_documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("path", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("synced_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("embedded", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["collection_id"], ["knowledge_collections.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("collection_id", "path", name="uq_knowledge_document"),
    )
    with op.batch_alter_table("knowledge_documents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_knowledge_documents_collection_id"), ["collection_id"], unique=False
        )

    op.create_table(
        "knowledge_chunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("heading", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("anchor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["collection_id"], ["knowledge_collections.id"]),
        sa.ForeignKeyConstraint(["document_id"], ["knowledge_documents.id"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("knowledge_chunks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_knowledge_chunks_collection_hash", ["collection_id", "content_hash"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_knowledge_chunks_document_id"), ["document_id"], unique=False
        )

    op.create_table(
        "message_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("collection", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("document", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("heading", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("link", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("message_sources", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_message_sources_message_id"), ["message_id"], unique=False
        )


def downgrade() -> None:
    bind = op.get_bind()
    for name in _vector_tables(bind):
        op.execute(f"DROP TABLE {name}")
    if bind.dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER knowledge_fts_{trigger}")
        op.execute("DROP TABLE knowledge_fts")
    # Postgres: the search column and its index go with the table

    op.drop_table("message_sources")
    op.drop_table("knowledge_chunks")
    op.drop_table("knowledge_documents")
    op.drop_table("knowledge_bindings")
    op.drop_table("knowledge_collections")
    op.drop_table("knowledge_audit")


def _vector_tables(bind: sa.engine.Connection) -> list[str]:
    """The `knowledge_vec_<dimensions>` tables made at run time (on SQLite the vec0 virtual
    tables only: their shadow tables go with them)."""
    if bind.dialect.name == "sqlite":
        query = (
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name GLOB 'knowledge_vec_[0-9]*' AND name NOT GLOB 'knowledge_vec_*_*' "
            "AND sql LIKE 'CREATE VIRTUAL TABLE%'"
        )
    else:
        query = (
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename ~ '^knowledge_vec_[0-9]+$'"
        )
    return [str(name) for name in bind.exec_driver_sql(query).scalars()]
