"""Login throttle: one counter row per key instead of one row per failed login.

The old ``login_failures`` rows were counted after the password check (so concurrent
attempts all passed) and never pruned. The service no longer reads or writes them; the
table is left as it is (a release that still uses it can run on this database) and is
not carried over: at worst a client gets its few failures of the last 15 minutes back.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``login_throttle``."""
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_at", sa.DateTime, nullable=False),
        sa.Column("blocked_until", sa.DateTime, nullable=True),
    )
    op.create_index("ix_login_throttle_last_at", "login_throttle", ["last_at"])


def downgrade() -> None:
    """Drop ``login_throttle``."""
    op.drop_index("ix_login_throttle_last_at", table_name="login_throttle")
    op.drop_table("login_throttle")
