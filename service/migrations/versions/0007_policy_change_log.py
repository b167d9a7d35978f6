"""The policy change log: each revision's added and removed rows, pruned after a while.

Instances that are behind apply the revisions they missed from it instead of reading
every row again; a revision without an entry (older ones, among them) makes them read
everything, as before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``policy_change``."""
    op.create_table(
        "policy_change",
        sa.Column("revision", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("parent", sa.String(32), nullable=True),
        sa.Column("row_count", sa.Integer, nullable=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("added", sa.Text, nullable=False),
        sa.Column("removed", sa.Text, nullable=False),
    )
    op.create_index("ix_policy_change_at", "policy_change", ["at"])


def downgrade() -> None:
    """Drop ``policy_change``."""
    op.drop_index("ix_policy_change_at", table_name="policy_change")
    op.drop_table("policy_change")
