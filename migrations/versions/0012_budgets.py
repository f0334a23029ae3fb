"""budgets and their audit

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 19:35:07.305352

Admins set spending limits from chat (`budget set USD [--scope ...] [--period day|month]`): one
row of budgets per scope, place and period; every change is a row of budget_audit.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "budget_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("surface", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("platform", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("workspace", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("before_usd", sa.Float(), nullable=True),
        sa.Column("after_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("budget_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_budget_audit_at"), ["at"], unique=False)

    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("platform", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("workspace", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("usd", sa.Float(), nullable=False),
        sa.Column("set_by", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("set_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "scope", "platform", "workspace", "channel", "period", name="uq_budget_scope_period"
        ),
    )


def downgrade() -> None:
    op.drop_table("budgets")
    with op.batch_alter_table("budget_audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_audit_at"))

    op.drop_table("budget_audit")
