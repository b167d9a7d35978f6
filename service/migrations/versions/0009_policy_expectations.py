"""Policy tests: expectations about single requests that every policy write must keep.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``policy_expectation``: one promise (allow or deny) per request."""
    op.create_table(
        "policy_expectation",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("subject", "method", "path", name="uq_policy_expectation_request"),
    )


def downgrade() -> None:
    """Drop the expectations."""
    op.drop_table("policy_expectation")
