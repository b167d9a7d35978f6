"""Who is logged in: a session token resolved to an account, cached per instance.

Resolving the session costs a database query; most requests come from sessions seen a
moment ago. The cache maps a session token to the account it belongs to and is dropped
whole whenever any session-ending change (logout, password change, deactivation) is
committed: at once on the instance that made it, and on every other instance at its
next revision poll. An entry is trusted only while that poll is healthy; otherwise the
database is asked, and if it cannot answer the request gets 503, never a stale allow.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app

from authz import PolicyEngine
from service.extensions import db
from service.models import User


@dataclass(frozen=True)
class SessionUser:
    """The logged-in account as the request sees it (Flask-Login's user protocol)."""

    id: int
    email: str
    session_token: str
    #: The default role's name while the account has not verified its email; None once
    #: it has. See :attr:`subject`.
    unverified_as: str | None = None
    is_active: bool = True
    is_authenticated: bool = True
    is_anonymous: bool = False

    def get_id(self) -> str:
        """The session carries the rotating token, never the account id."""
        return self.session_token

    @property
    def subject(self) -> str:
        """The policy subject of this account.

        Until the account proves it owns its email, it is decided as the default role,
        not as its email: rows naming an address (a grant made before its owner
        registered, a ``g`` row loaded from CSV) must not go to whoever typed it first.
        """
        if self.unverified_as is not None:
            return self.unverified_as
        return self.email.lower()


class SessionCache:
    """Session token -> SessionUser, bounded, cleared on any session-ending change."""

    def __init__(self, engine: PolicyEngine, poll_interval: float, max_entries: int = 50_000):
        self._engine = engine
        self._entries: dict[str, SessionUser] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        #: Trust entries only while the revision poll has succeeded this recently.
        self._fresh_for = 2 * poll_interval + 0.5
        engine.on_accounts_change(self.clear)

    def get(self, token: str) -> SessionUser | None:
        """Return the cached account of a token, if the cache may be trusted now."""
        if time.monotonic() - self._engine.verified_at > self._fresh_for:
            return None  # the poll is failing or late: another instance may have changed it
        return self._entries.get(token)

    def put(self, user: SessionUser) -> None:
        """Remember a resolved session (known tokens only: misses are never stored)."""
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[user.session_token] = user

    def clear(self) -> None:
        """Forget every session."""
        with self._lock:
            self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)


def load(token: str, cache: SessionCache | None = None) -> SessionUser | None:
    """Flask-Login's user loader: the active account owning a session token, or None."""
    if cache is None:
        cache = current_app.extensions.get("authz.sessions")
    if cache is not None:
        hit = cache.get(token)
        if hit is not None:
            return hit
    row = db.session.execute(
        sa.select(User.id, User.email, User.verified_at).where(
            User.session_token == token, User.active.is_(True)
        )
    ).first()
    db.session.rollback()  # end the read transaction now; nothing else runs on it
    if row is None:
        return None
    unverified_as = None if row.verified_at else current_app.config["AUTHZ"].default_role
    user = SessionUser(row.id, row.email, token, unverified_as)
    if cache is not None:
        cache.put(user)
    return user
