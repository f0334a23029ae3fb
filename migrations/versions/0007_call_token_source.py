"""call token source, reasoning tokens and fallbacks

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 09:00:00.000000

Where each call's token counts came from ("server", "none", "estimate:<tokenizer>"), the
reasoning tokens inside its completion tokens, and which model a fallback stood in for. Calls
stored before this revision read as "server" and 0: nothing recorded which were estimates.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("llm_calls", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reasoning_tokens", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(
            sa.Column(
                "token_source",
                sqlmodel.sql.sqltypes.AutoString(length=32),
                nullable=False,
                server_default="server",
            )
        )
        batch_op.add_column(
            sa.Column("fallback_for", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("llm_calls", schema=None) as batch_op:
        batch_op.drop_column("fallback_for")
        batch_op.drop_column("token_source")
        batch_op.drop_column("reasoning_tokens")
