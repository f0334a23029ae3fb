"""report indexes

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 14:00:00.000000

What a report reads at a million calls (benchmarks/report_scale.py): a period's messages and
votes by time, the fake model's calls by time (which conversations were only its), and a
version's usage (`prompt show`) from an index alone. Indexes only: no data changes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("messages", "ix_messages_created_at", ["created_at"]),
    ("llm_calls", "ix_llm_calls_model_created_at", ["model", "created_at"]),
    (
        "llm_calls",
        "ix_llm_calls_version_usage",
        ["prompt_version_id", "purpose", "cache_hit", "contract_error"],
    ),
    ("feedback", "ix_feedback_updated_at", ["updated_at"]),
)


def upgrade() -> None:
    for table, name, columns in _INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for table, name, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
