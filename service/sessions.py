"""Who is logged in: a session cookie resolved to its login row and account, cached.

Every login gets its own row in ``user_session`` (one per device) and a fresh random
256-bit id, which the signed session cookie carries; the database keeps only its
SHA-256. A session ends when its row is ended (logout, by the user or an admin, a
password change), when its account is deactivated, when it has not been used for
``AUTHZ_SESSION_IDLE`` seconds or is older than ``AUTHZ_SESSION_ABSOLUTE`` seconds.

Resolving a session costs a database query; most requests come from sessions seen a
moment ago. The cache maps a session id to its account and is dropped whole whenever a
session-ending change is committed: at once on the instance that made it, and on every
other instance at its next revision poll. An entry is trusted only while that poll is
healthy; otherwise the database is asked, and if it cannot answer the request gets 503,
never a stale allow. ``last_seen_at`` is written at most once a minute per session.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from typing import Generic
from typing import TypeVar

import sqlalchemy as sa
from flask import Flask
from flask import current_app
from flask import request
from flask.sessions import SecureCookieSession
from flask.sessions import SecureCookieSessionInterface

from authz import PolicyEngine
from service.extensions import db
from service.models import User
from service.models import UserSession
from service.models import utcnow

V = TypeVar("V")

#: Seconds between two writes of a session's ``last_seen_at`` (at most; less for tiny
#: idle lifetimes, so that an active session never idles out between two writes).
TOUCH_EVERY = 60.0
#: Longest User-Agent kept for the account page.
MAX_AGENT = 255


def new_session_id() -> str:
    """Return a fresh random session id (256 bits), as the cookie carries it."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Return what the database stores for a session id: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class SessionUser:
    """The logged-in account as the request sees it (Flask-Login's user protocol)."""

    id: int
    email: str
    #: The ``user_session`` row of this login (the account page's "this device").
    session_id: int
    #: The id the cookie carries (never stored server-side).
    token: str
    #: Epoch seconds: when this session started, and when its ``last_seen_at`` was written.
    created: float
    seen: float
    #: The default role's name while the account has not verified its email; None once
    #: it has. See :attr:`subject`.
    unverified_as: str | None = None
    is_active: bool = True
    is_authenticated: bool = True
    is_anonymous: bool = False

    def get_id(self) -> str:
        """The session cookie carries this login's id, never the account id."""
        return self.token

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


@dataclass(frozen=True)
class Lifetimes:
    """How long a session may go unused (idle) and last at most (absolute), in seconds."""

    idle: float
    absolute: float

    @property
    def touch_every(self) -> float:
        """Seconds between writes of ``last_seen_at``."""
        return min(TOUCH_EVERY, self.idle / 4)

    @classmethod
    def of_app(cls) -> Lifetimes:
        """The lifetimes the app is configured with."""
        settings = current_app.config["AUTHZ"]
        return cls(float(settings.session_idle), float(settings.session_absolute))


class RevocableCache(Generic[V]):
    """Key -> value, bounded, cleared whole on any account change, on every instance.

    For what a revocation must end at once: sessions here, service tokens in
    service.tokens. A generation counter closes the race between a lookup and its cache
    write: a lookup notes the generation before it reads the database (or the cache),
    and its result is stored only if no account change was announced since
    (:meth:`store`). Without it a deactivation or revocation committed between the read
    and the write would leave the old entry cached and allowed until the next unrelated
    change. Entries are trusted only while the revision poll is healthy: otherwise a
    change made on another instance may not have arrived.
    """

    def __init__(self, engine: PolicyEngine, poll_interval: float, max_entries: int) -> None:
        self._engine = engine
        self._entries: dict[str, V] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        #: Counts clears; a lookup's result is stored only if it did not move meanwhile.
        self._generation = 0
        #: Trust entries only while the revision poll has succeeded this recently.
        self._fresh_for = 2 * poll_interval + 0.5
        engine.on_accounts_change(self.clear)

    @property
    def generation(self) -> int:
        """Read before a lookup; pass to :meth:`store` with its result."""
        return self._generation

    def get(self, key: str) -> V | None:
        """Return the cached value of ``key``, if the cache may be trusted now."""
        if time.monotonic() - self._engine.verified_at > self._fresh_for:
            return None  # the poll is failing or late: another instance may have changed it
        return self._entries.get(key)

    def store(self, key: str, value: V, generation: int) -> bool:
        """Remember a value read at ``generation``; False when it is too old.

        Known entries only: misses are never stored.
        """
        with self._lock:
            if generation != self._generation:
                # An account change landed between the read and now: what was read may
                # already be ended. The next request asks the database again.
                return False
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = value
            return True

    def discard(self, key: str) -> None:
        """Forget one entry (it expired)."""
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries = {}
            self._generation += 1

    def __len__(self) -> int:
        return len(self._entries)


class SessionCache(RevocableCache[SessionUser]):
    """Session id -> SessionUser (see RevocableCache)."""

    def __init__(self, engine: PolicyEngine, poll_interval: float, max_entries: int = 50_000):
        super().__init__(engine, poll_interval, max_entries)

    def put(self, user: SessionUser, generation: int) -> bool:
        """Remember a resolved session read at ``generation``; False when it is too old."""
        return self.store(user.token, user, generation)


def load(token: str, cache: SessionCache | None = None) -> SessionUser | None:
    """Flask-Login's user loader: the live session with this id and its active account."""
    if not isinstance(token, str) or not token or len(token) > 128:
        return None
    if cache is None:
        cache = current_app.extensions.get("authz.sessions")
    lifetimes = Lifetimes.of_app()
    now = time.time()
    generation = 0
    if cache is not None:
        hit = cache.get(token)
        if hit is not None:
            if now - hit.seen < lifetimes.touch_every and now - hit.created < lifetimes.absolute:
                return hit
            # Time to write last_seen_at, or past its lifetime: the database decides.
            cache.discard(token)
        generation = cache.generation  # before the read: see SessionCache
    user = _lookup(token, lifetimes, now)
    if user is not None and cache is not None:
        cache.put(user, generation)
    return user


def _lookup(token: str, lifetimes: Lifetimes, now: float) -> SessionUser | None:
    """Read the session from the database; write ``last_seen_at`` when it is due."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    row = db.session.execute(
        sa.select(
            UserSession.id,
            UserSession.created_at,
            UserSession.last_seen_at,
            User.id.label("user_id"),
            User.email,
            User.verified_at,
        )
        .join(User, User.id == UserSession.user_id)
        .where(
            UserSession.token_hash == token_hash(token),
            UserSession.ended_at.is_(None),
            UserSession.created_at > moment - dt.timedelta(seconds=lifetimes.absolute),
            UserSession.last_seen_at > moment - dt.timedelta(seconds=lifetimes.idle),
            User.active.is_(True),
        )
    ).first()
    if row is None:
        db.session.rollback()  # end the read transaction now; nothing else runs on it
        return None
    seen = row.last_seen_at.timestamp()
    if now - seen >= lifetimes.touch_every:
        due = moment - dt.timedelta(seconds=lifetimes.touch_every)
        # Conditional, so instances touching one session at once write it once.
        db.session.execute(
            sa.update(UserSession)
            .where(UserSession.id == row.id, UserSession.last_seen_at <= due)
            .values(last_seen_at=moment)
        )
        db.session.commit()
        seen = now
    else:
        db.session.rollback()
    unverified_as = None if row.verified_at else current_app.config["AUTHZ"].default_role
    return SessionUser(
        row.user_id, row.email, row.id, token, row.created_at.timestamp(), seen, unverified_as
    )


def start(user: User, *, address: str, agent: str) -> SessionUser:
    """Record a new login of ``user`` on one device; return it with its new id.

    The caller commits. This account's ended and expired rows are pruned here, so the
    table holds about one row per live session.
    """
    lifetimes = Lifetimes.of_app()
    now = utcnow()
    db.session.execute(
        sa.delete(UserSession).where(
            UserSession.user_id == user.id,
            sa.or_(
                UserSession.ended_at.is_not(None),
                UserSession.created_at <= now - dt.timedelta(seconds=lifetimes.absolute),
                UserSession.last_seen_at <= now - dt.timedelta(seconds=lifetimes.idle),
            ),
        )
    )
    token = new_session_id()
    row = UserSession(
        token_hash=token_hash(token),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        ip=address[:64],
        user_agent=agent[:MAX_AGENT],
    )
    db.session.add(row)
    db.session.flush()
    stamp = now.timestamp()
    unverified_as = None if user.verified_at else current_app.config["AUTHZ"].default_role
    return SessionUser(user.id, user.email, row.id, token, stamp, stamp, unverified_as)


def live(user_id: int) -> list[UserSession]:
    """Return the live sessions of an account, the most recently used first."""
    lifetimes = Lifetimes.of_app()
    now = utcnow()
    return list(
        db.session.scalars(
            sa.select(UserSession)
            .where(
                UserSession.user_id == user_id,
                UserSession.ended_at.is_(None),
                UserSession.created_at > now - dt.timedelta(seconds=lifetimes.absolute),
                UserSession.last_seen_at > now - dt.timedelta(seconds=lifetimes.idle),
            )
            .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
        )
    )


def end_statement(user_id: int, *, only: int | None = None, keep: int | None = None) -> sa.Update:
    """The UPDATE that ends an account's live sessions (one, or all but one, or all)."""
    query = sa.update(UserSession).where(
        UserSession.user_id == user_id, UserSession.ended_at.is_(None)
    )
    if only is not None:
        query = query.where(UserSession.id == only)
    if keep is not None:
        query = query.where(UserSession.id != keep)
    return query.values(ended_at=utcnow())


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, except for requests with a bearer token.

    A bearer request (a program with a service token) carries no cookie session: a
    cookie sent with it is not read, and nothing it does (a flashed message, a CSRF
    token) sets one. Told by the header alone, before anything is decided; a request
    whose token is bad is refused anyway.
    """

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        if bearer_credentials(request.environ) is not None:
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        if bearer_credentials(request.environ) is not None:
            return
        super().save_session(app, session, response)


def bearer_credentials(environ: dict[str, Any]) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None without one.

    Another scheme (Basic, ...) is not this service's and is ignored: the request is then
    decided on its session cookie, or as anonymous.
    """
    header: str | None = environ.get("HTTP_AUTHORIZATION")
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()
