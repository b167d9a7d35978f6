"""An index on a policy row's first two values: a row is edited or removed by its values.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index ``casbin_rule (v0, v1)``: without it, removing one row reads every row."""
    op.create_index("ix_casbin_rule_v0_v1", "casbin_rule", ["v0", "v1"])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_casbin_rule_v0_v1", table_name="casbin_rule")
