"""Baseline: the schema of release 0.1.0 (accounts, policy rows, revision, audit log).

Written out here rather than read from the models, so it stays what 0.1.0 created while
the models move on. Tables that already exist are kept, so a first start that stopped
half way is finished rather than refused.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import context
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def _missing(name: str) -> bool:
    if context.is_offline_mode():
        return True
    return not sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    """Create the 0.1.0 tables that are missing and the policy revision row."""
    if _missing("users"):
        op.create_table(
            "users",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("email", sa.String(255), nullable=False, unique=True),
            sa.Column("password_hash", sa.String(255), nullable=False),
            sa.Column("active", sa.Boolean, nullable=False),
            sa.Column("session_token", sa.String(64), nullable=False, unique=True),
            sa.Column("created_at", sa.DateTime, nullable=False),
            sa.Column("last_login_at", sa.DateTime, nullable=True),
        )
    if _missing("login_failures"):
        op.create_table(
            "login_failures",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("key", sa.String(300), nullable=False),
            sa.Column("at", sa.DateTime, nullable=False),
        )
        op.create_index("ix_login_failures_key", "login_failures", ["key"])
        op.create_index("ix_login_failures_at", "login_failures", ["at"])
    if _missing("casbin_rule"):
        op.create_table(
            "casbin_rule",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("ptype", sa.String(255)),
            *(sa.Column(f"v{i}", sa.String(255)) for i in range(6)),
        )
    if _missing("policy_revision"):
        revision_table = op.create_table(
            "policy_revision",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("revision", sa.Integer, nullable=False),
            sa.Column("changed_at", sa.DateTime, nullable=False),
            sa.Column("accounts", sa.Integer, nullable=False, server_default="0"),
        )
        # The one row every instance reads and bumps; stored as naive UTC like the app does.
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        op.bulk_insert(revision_table, [{"id": 1, "revision": 0, "accounts": 0, "changed_at": now}])
    if _missing("audit_log"):
        op.create_table(
            "audit_log",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("at", sa.DateTime, nullable=False),
            sa.Column("actor", sa.String(255), nullable=False),
            sa.Column("source", sa.String(16), nullable=False),
            sa.Column("action", sa.String(64), nullable=False),
            sa.Column("added", sa.Text, nullable=False),
            sa.Column("removed", sa.Text, nullable=False),
            sa.Column("forced", sa.Boolean, nullable=False),
            sa.Column("revision", sa.Integer, nullable=False),
            sa.Column("detail", sa.Text, nullable=False),
        )
        op.create_index("ix_audit_log_at", "audit_log", ["at"])
        op.create_index("ix_audit_log_actor", "audit_log", ["actor"])


def downgrade() -> None:
    """Drop every table (a database before the baseline is an empty one)."""
    for name in ("audit_log", "policy_revision", "casbin_rule", "login_failures", "users"):
        op.drop_table(name)
