"""Account tables: users (with a rotating session token) and failed-login records."""

from __future__ import annotations

import datetime as dt
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from authz.store import UTCDateTime
from service.extensions import db


def new_session_token() -> str:
    """Return a fresh random session token."""
    return secrets.token_urlsafe(32)


def utcnow() -> dt.datetime:
    """Return the current time in UTC."""
    return dt.datetime.now(dt.UTC)


class User(db.Model):  # type: ignore[name-defined,misc]
    """An account. Its subject in the policy is its email, lower-cased."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    active: Mapped[bool] = mapped_column(default=True)
    #: Identifies the user's sessions; rotating it ends every session at once
    #: (logout, password change, deactivation).
    session_token: Mapped[str] = mapped_column(
        sa.String(64), unique=True, default=new_session_token
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: When the account proved it owns its email (a verification or reset link, or an
    #: admin or the CLI creating it). Until then rows naming the email do not apply.
    verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # Flask-Login's user protocol.
    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        # The session carries the rotating token, never the row id, so a session
        # cookie dies with the token (cf. Flask-Security's fs_uniquifier).
        return self.session_token

    @property
    def subject(self) -> str:
        """The policy subject of this account."""
        return self.email.lower()


class LoginFailure(db.Model):  # type: ignore[name-defined,misc]
    """One failed login attempt, keyed by account email or client address."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(300), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
