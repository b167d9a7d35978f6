"""Email verification: ``users.verified_at``.

Accounts that exist when this runs are marked verified (at their creation time): they
were created by an admin or the CLI, who vouched for the address, or registered under
the rules of their time, and their owners have been using them with their grants. Left
unverified, every existing user would silently lose every row naming their email on
upgrade, admins included (a lockout the upgrade must not cause).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column and mark every existing account verified."""
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("verified_at", sa.DateTime, nullable=True))
    users = sa.table("users", sa.column("verified_at"), sa.column("created_at"))
    op.execute(users.update().values(verified_at=users.c.created_at))


def downgrade() -> None:
    """Drop the column."""
    with op.batch_alter_table("users") as batch:
        batch.drop_column("verified_at")
