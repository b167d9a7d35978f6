"""Account tables: users, their sessions (one row per login) and login-throttle counters."""

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
    #: No longer read: sessions live in ``user_session``, one row per login. Kept so
    #: this schema change only adds; a later revision drops it.
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


class LoginThrottle(db.Model):  # type: ignore[name-defined,misc]
    """One login-throttle counter: an account, an address, or an (address, account) pair.

    Keys: ``acct:<email>`` (failures from addresses the account never logged in from),
    ``pair:<address>|<email>`` (failures from an address it did log in from),
    ``addr:<address>`` (failures from the address, any account), and
    ``ok:<address>|<email>`` (the last successful login of that account from there).
    One row per key, incremented in one statement, so concurrent attempts cannot pass
    the count unseen.
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(sa.String(600), primary_key=True)
    #: Attempts counted as failures in the current window (counted before the check).
    failures: Mapped[int] = mapped_column(default=0)
    #: When the last attempt was counted (or, for ``ok:`` keys, the last success).
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    #: No attempt under this key is verified before this moment.
    blocked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class LoginFailure(db.Model):  # type: ignore[name-defined,misc]
    """A failed login of release 0.1.0 (no longer written or read: see LoginThrottle).

    Kept so the table stays described while a release that still uses it may share the
    database; drop it (model and table) in a later migration.
    """

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(300), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class UserSession(db.Model):  # type: ignore[name-defined,misc]
    """One login on one device: what the session cookie points at.

    The cookie carries a random 256-bit id; only its SHA-256 is stored, so reading this
    table (a backup, an SQL injection elsewhere) yields no cookie that would log anyone in.
    """

    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: SHA-256 (hex) of the id in the cookie.
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Written at most once a minute per session, never on every request.
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The client address at login (behind trusted proxies: the real one).
    ip: Mapped[str] = mapped_column(sa.String(64), default="")
    #: The browser's User-Agent at login, truncated.
    user_agent: Mapped[str] = mapped_column(sa.String(255), default="")
    #: When the session was ended (logout, by the user, an admin, a password change).
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ServiceToken(db.Model):  # type: ignore[name-defined,misc]
    """A service token: how a program (not a person) authenticates, by a bearer header.

    Its policy subject is ``token:<name>``. The secret is shown once, when the token is
    created; the database keeps only its keyed hash (HMAC-SHA-256, see service.tokens).
    """

    __tablename__ = "service_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    #: HMAC-SHA-256 (hex) of the secret, keyed by a key derived from the secret key.
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    #: The first characters of the secret (its product prefix and a few more), so an
    #: admin can tell which token a leaked or logged value is without the secret.
    hint: Mapped[str] = mapped_column(sa.String(16), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(255), default="")
    #: None: never expires.
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Written at most once a minute per token, after the response, never per request.
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def subject(self) -> str:
        """The policy subject of this token."""
        return f"token:{self.name}"
