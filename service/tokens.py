"""Service tokens: bearer credentials for programs, each a policy subject ``token:NAME``.

A token is ``authz_`` followed by 256 random bits (URL-safe base64): the prefix names the
product, so secret scanners can recognise a leaked one. The secret is shown once; the
database keeps its HMAC-SHA-256 under a key derived from the service's secret key. A
fast keyed hash, not argon2: a token is checked on every call, and 256 random bits need
no stretching; the key means a copy of the table alone cannot even confirm a guess.

What a token may do is policy data like everything else: ``g, token:NAME, ROLE`` rows,
written with the token (``--role``) or later. Creating and revoking a token are audited
account writes; a revocation ends the token on every instance at the next revision poll
(at once with PostgreSQL's LISTEN), the same path that ends login sessions.

Resolving a token costs a database query; the cache maps a token's hash to its subject
and expiry, is dropped whole on every account change, and is trusted only while the
revision poll is healthy (as service.sessions). ``last_used_at`` is written at most once
a minute per token, after the response has been sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from authz import Change
from authz import PolicyEngine
from authz import Rule
from authz.expectations import ExpectationsBroken
from authz.rules import TOKEN_NAME
from authz.rules import TOKEN_PREFIX
from authz.store import rule_table
from service import sessions
from service import users
from service.extensions import db
from service.models import ServiceToken
from service.models import utcnow

#: Every token starts with this: it names the product for secret scanners.
PREFIX = "authz_"
#: The secret after the prefix: 32 random bytes in URL-safe base64, 43 characters.
_SECRET = re.compile(r"authz_[A-Za-z0-9_-]{43}\Z")
#: Seconds between two writes of a token's ``last_used_at``.
TOUCH_EVERY = 60.0
#: Characters of the secret kept in the clear, to tell tokens apart in a list.
HINT_LENGTH = len(PREFIX) + 4
#: The longest lifetime a token may be given, in days (about 10 years).
MAX_DAYS = 3650


class TokenError(users.AccountError):
    """A token operation was refused; the message is safe to show."""


@dataclass(frozen=True)
class TokenUser:
    """The caller of a bearer request: a service token.

    Deliberately not a Flask-Login user: views acting on the logged-in account see an
    anonymous visitor, so no token is ever taken for the account that shares its row id.
    """

    id: int
    name: str
    #: Epoch seconds; None: never expires.
    expires: float | None
    #: Epoch seconds of the last write of ``last_used_at`` (0: never used).
    used: float

    @property
    def subject(self) -> str:
        """The policy subject of this token."""
        return f"{TOKEN_PREFIX}{self.name}"


def new_secret() -> str:
    """Return a fresh token: the product prefix and 256 random bits."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(secret_key: str) -> bytes:
    """The HMAC key of token hashes, derived from (never equal to) the secret key."""
    return hmac.new(secret_key.encode(), b"authz service token v1", hashlib.sha256).digest()


def token_hash(secret: str, key: bytes) -> str:
    """Return what the database stores for a token: its HMAC-SHA-256, in hex."""
    return hmac.new(key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def looks_like_token(secret: str) -> bool:
    """Whether ``secret`` has a token's shape (checked before any hash or query)."""
    return _SECRET.match(secret) is not None


def _key() -> bytes:
    key: bytes | None = current_app.extensions.get("authz.token_key")
    if key is None:
        key = hash_key(current_app.config["SECRET_KEY"])
        current_app.extensions["authz.token_key"] = key
    return key


def check_name(name: str) -> str:
    """Return a token name, or TokenError: a lower-case word like a role name."""
    if name.startswith(TOKEN_PREFIX):
        name = name[len(TOKEN_PREFIX) :]
    if not TOKEN_NAME.match(name):
        raise TokenError(
            f"{name!r} is not a token name ([a-z][a-z0-9_-]*, at most 63 characters)",
            field="name",
        )
    return name


# -- admin operations -------------------------------------------------------------------


def get(name: str) -> ServiceToken | None:
    """Return the token named ``name`` (with or without ``token:``), revoked ones too."""
    try:
        name = check_name(name)
    except TokenError:
        return None
    return db.session.scalar(sa.select(ServiceToken).where(ServiceToken.name == name))


def require(name: str) -> ServiceToken:
    """Return the token named ``name``, or TokenError."""
    token = get(name)
    if token is None:
        raise TokenError(f"no token named {name!r}", field="name")
    return token


def list_tokens() -> list[ServiceToken]:
    """Return every token, revoked ones too, by name."""
    return list(db.session.scalars(sa.select(ServiceToken).order_by(ServiceToken.name)))


def roles_of(name: str) -> list[str]:
    """The roles assigned to a token directly (its ``g`` rows)."""
    return users.direct_roles(f"{TOKEN_PREFIX}{name}")


def create(
    name: str,
    *,
    roles: Iterable[str] = (),
    expires_days: int | None = None,
    actor: str,
    source: str,
    force: bool = False,
) -> tuple[ServiceToken, str]:
    """Create a token with its roles in one audited write; return it and its secret.

    The secret is returned once and stored nowhere: only its keyed hash is kept.
    """
    name = check_name(name)
    roles = list(dict.fromkeys(roles))
    for role in roles:
        try:
            users.check_role(role)
        except users.AccountError as e:
            raise TokenError(e.message, field="roles") from e
    if expires_days is not None and not 1 <= expires_days <= MAX_DAYS:
        raise TokenError(f"expires must be 1 to {MAX_DAYS} days", field="expires")
    if get(name) is not None:
        raise TokenError(
            f"a token named {name!r} exists (revoked names are not reused)", field="name"
        )
    subject = f"{TOKEN_PREFIX}{name}"
    # A row written for this subject before the token existed (an assignment API call, a
    # CSV load) would arm the new token with rights its creator never chose: refuse.
    waiting = [r for r in users.engine().rules() if r.values and r.values[0] == subject]
    if waiting:
        raise TokenError(
            f"the policy already has rows for {subject} ({waiting[0]}"
            f"{f' and {len(waiting) - 1} more' if len(waiting) > 1 else ''}); "
            "remove them or choose another name",
            field="name",
        )
    secret = new_secret()
    digest = token_hash(secret, _key())
    now = utcnow()
    expires = now + dt.timedelta(days=expires_days) if expires_days else None

    def add_row(session: Session) -> None:
        if session.scalar(sa.select(ServiceToken.id).where(ServiceToken.name == name)):
            raise TokenError(f"a token named {name!r} exists", field="name")
        # Again under the write lock, on the stored rows: another instance may have
        # written a row for this name since this one's snapshot.
        stored = session.scalar(
            sa.select(rule_table.c.id).where(rule_table.c.v0 == subject).limit(1)
        )
        if stored is not None:
            raise TokenError(
                f"the policy already has rows for {subject}; remove them or choose another name",
                field="name",
            )
        session.add(
            ServiceToken(
                name=name,
                token_hash=digest,
                hint=secret[:HINT_LENGTH],
                created_at=now,
                created_by=actor,
                expires_at=expires,
            )
        )

    detail = f"token {subject}" + (f", expires {expires:%Y-%m-%d %H:%M} UTC" if expires else "")
    users.engine().apply(
        Change.adding(*(Rule.of("g", subject, role) for role in roles)),
        actor=actor,
        source=source,
        action="token.create",
        detail=detail,
        hook=add_row,  # nothing cached knows a token that did not exist: no session ends
        force=force,  # past the policy tests its role rows break (the CLI's --force)
    )
    return require(name), secret


def revoke(name: str, *, actor: str, source: str) -> ServiceToken:
    """Revoke a token and remove its rows (role assignments, rules), in one audited write.

    Every instance drops its cached tokens at its next revision poll; this one at once.
    """
    token = require(name)
    if token.revoked_at is not None:
        raise TokenError(f"token {token.name!r} is already revoked", field="name")
    subject = token.subject
    # Its role assignments and any rule naming it directly: a revoked token holds nothing.
    links = tuple(r for r in users.engine().rules() if r.values[:1] == (subject,))
    token_id = token.id

    def mark(session: Session) -> None:
        session.execute(
            sa.update(ServiceToken)
            .where(ServiceToken.id == token_id, ServiceToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        users.engine().store.accounts_changed(session)  # every instance drops its cache

    def write(force: bool) -> None:
        users.engine().apply(
            Change.removing(*links),
            actor=actor,
            source=source,
            action="token.revoke",
            detail=f"token {subject}",
            hook=mark,
            force=force,
        )

    try:
        write(False)
    except ExpectationsBroken as e:
        # A policy test promising this token access must not keep a leaked token alive:
        # the revoke goes past those (its audit entry names them); any other still refuses.
        if any(r.expectation.subject != subject for r in e.results):
            raise
        write(True)
    users.engine().accounts_changed()
    db.session.expire_all()
    return require(name)


def state(token: ServiceToken, now: dt.datetime | None = None) -> str:
    """``active``, ``expired`` or ``revoked``."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


# -- authentication ---------------------------------------------------------------------


class TokenCache(sessions.RevocableCache[TokenUser]):
    """Token hash -> TokenUser (see RevocableCache): a revocation clears it everywhere."""

    def __init__(self, engine: PolicyEngine, poll_interval: float, max_entries: int = 10_000):
        super().__init__(engine, poll_interval, max_entries)


def authenticate(secret: str, cache: TokenCache | None) -> tuple[TokenUser | None, bool]:
    """Return the live token of a bearer secret (or None), and whether to touch it.

    Touching (writing ``last_used_at``) is the caller's to do after the response: see
    :func:`touch`.
    """
    if not looks_like_token(secret):
        return None, False
    digest = token_hash(secret, _key())
    now = time.time()
    generation = 0
    if cache is not None:
        # Read before the entry: a revocation clearing the cache after this read makes
        # any put below a no-op, so a revoked token is never put back.
        generation = cache.generation
        hit = cache.get(digest)
        if hit is not None:
            if hit.expires is not None and now >= hit.expires:
                cache.discard(digest)
                return None, False
            if now - hit.used >= TOUCH_EVERY:
                # Touched after the response: remember it now, so concurrent requests
                # do not all write.
                cache.store(digest, _used(hit, now), generation)
                return hit, True
            return hit, False
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    row = db.session.execute(
        sa.select(
            ServiceToken.id, ServiceToken.name, ServiceToken.expires_at, ServiceToken.last_used_at
        ).where(
            ServiceToken.token_hash == digest,
            ServiceToken.revoked_at.is_(None),
            sa.or_(ServiceToken.expires_at.is_(None), ServiceToken.expires_at > moment),
        )
    ).first()
    db.session.rollback()  # end the read transaction now
    if row is None:
        return None, False
    used = row.last_used_at.timestamp() if row.last_used_at is not None else 0.0
    user = TokenUser(row.id, row.name, row.expires_at.timestamp() if row.expires_at else None, used)
    due = now - used >= TOUCH_EVERY
    if cache is not None:
        cache.store(digest, _used(user, now) if due else user, generation)
    return user, due


def _used(user: TokenUser, now: float) -> TokenUser:
    return TokenUser(user.id, user.name, user.expires, now)


def touch(token_id: int) -> None:
    """Record that a token was used now (at most once a minute; instances race safely)."""
    now = utcnow()
    due = now - dt.timedelta(seconds=TOUCH_EVERY)
    try:
        db.session.execute(
            sa.update(ServiceToken)
            .where(
                ServiceToken.id == token_id,
                sa.or_(ServiceToken.last_used_at.is_(None), ServiceToken.last_used_at <= due),
            )
            .values(last_used_at=now)
        )
        db.session.commit()
    except sa.exc.SQLAlchemyError:
        # Bookkeeping only: the request has been answered; the next use writes it.
        db.session.rollback()
        current_app.logger.warning("could not record the last use of token %d", token_id)
