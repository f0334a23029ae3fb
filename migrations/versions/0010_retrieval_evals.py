"""retrieval evals: recall@k and MRR on eval runs and their results

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 17:00:00.000000

A run's retrieval cases (a question put to the knowledge search, the sources it should find):
their count, mean recall@k, mean reciprocal rank and k on the run; each case's recall,
reciprocal rank and the collections it searched on its result row. Runs stored before this
revision read as having no retrieval case.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retrieval_cases", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(sa.Column("retrieval_recall", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("retrieval_mrr", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("retrieval_k", sa.Integer(), nullable=True))
    with op.batch_alter_table("eval_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recall", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("reciprocal_rank", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("collections", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("eval_results", schema=None) as batch_op:
        batch_op.drop_column("collections")
        batch_op.drop_column("reciprocal_rank")
        batch_op.drop_column("recall")
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.drop_column("retrieval_k")
        batch_op.drop_column("retrieval_mrr")
        batch_op.drop_column("retrieval_recall")
        batch_op.drop_column("retrieval_cases")
