"""An index on the audit log's revision: conflicts and catch-up read entries after one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index ``audit_log.revision``."""
    op.create_index("ix_audit_log_revision", "audit_log", ["revision"])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_audit_log_revision", table_name="audit_log")
