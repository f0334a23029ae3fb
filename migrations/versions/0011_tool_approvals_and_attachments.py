"""tool approvals, message attachments, author index

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 18:50:48.906587

Tools that act on a user's behalf wait for that user's approval: each ask and its decision is a
row of tool_approvals. A user message keeps the files sent with it and what the model could see
of each (messages.attachments, JSON). Rate limits count a user's recent messages
(ix_messages_author_id_created_at).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tool_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("tool", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("requester", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("decided_by", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=True),
        sa.Column("asked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("decided_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tool_approvals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tool_approvals_message_id"), ["message_id"], unique=False
        )

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attachments", sa.Text(), nullable=True))
        batch_op.create_index(
            "ix_messages_author_id_created_at", ["author_id", "created_at"], unique=False
        )


def downgrade() -> None:
    # the approvals first: SQLite rebuilds `messages` to drop a column, which a table still
    # referring to it forbids
    with op.batch_alter_table("tool_approvals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tool_approvals_message_id"))

    op.drop_table("tool_approvals")

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_author_id_created_at")
        batch_op.drop_column("attachments")
