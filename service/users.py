"""Accounts: register, authenticate, (de)activate, change password, assign roles.

The only module views and commands use for account data. Every change that touches the
policy (role rows) or ends sessions goes through the engine's write path, so the account
row, the role rows and the audit entry commit together.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import logging
import math
import re
import secrets
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from typing import cast

import sqlalchemy as sa
from flask import current_app
from flask_login import current_user
from itsdangerous import BadSignature
from itsdangerous import SignatureExpired
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authz import ANONYMOUS
from authz import AuditEntry
from authz import Change
from authz import EngineUnavailable
from authz import PolicyEngine
from authz import Rule
from authz import views
from authz.errors import database_reason
from authz.expectations import ExpectationsBroken
from authz.risks import risks
from authz.rules import EMAIL_PATTERN
from authz.rules import is_role
from authz.rules import is_token
from authz.store import DATABASE_ERRORS
from service import mail
from service import sessions
from service.config import Env
from service.config import Settings
from service.events import Event
from service.events import auth_event
from service.extensions import db
from service.models import LoginThrottle
from service.models import User
from service.models import UserSession
from service.models import new_session_token
from service.models import utcnow
from service.passwords import Passwords

log = logging.getLogger(__name__)

#: The shape of an address an existing account may have (lookups, login).
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\Z")
_CANONICAL_EMAIL = re.compile(EMAIL_PATTERN + r"\Z")
#: Characters that change a URL's meaning or that the service refuses in a path.
_URL_SPECIAL = frozenset("/?#%\\")


class AccountError(Exception):
    """An account operation was refused; the message is safe to show."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def engine() -> PolicyEngine:
    """Return the app's policy engine."""
    return current_app.extensions["authz"]  # type: ignore[no-any-return]


def passwords() -> Passwords:
    """Return the app's password hasher."""
    return current_app.extensions["authz.passwords"]  # type: ignore[no-any-return]


def normalize_email(email: str) -> str:
    """Return a new account's email stripped and lower-cased, or raise AccountError.

    Only addresses whose every character can stand in a URL path segment as it is are
    accepted, so each account can be managed on the web under the very string the
    policy decides on. Non-ASCII addresses are refused: Unicode case mapping and
    compatibility forms give one address several spellings.
    """
    email = email.strip()
    if not email:
        raise AccountError("enter an email address", field="email")
    if any(not c.isprintable() or c.isspace() for c in email):
        raise AccountError(
            "an email address cannot contain spaces or control characters", field="email"
        )
    if not email.isascii():
        raise AccountError(
            "only ASCII email addresses are supported (write an international domain "
            "in its xn-- form)",
            field="email",
        )
    # Lower-cased only once it is ASCII: str.lower() maps some non-ASCII letters to
    # ASCII ones (the Kelvin sign to "k"), which would give this account a second name.
    email = email.lower()
    if _URL_SPECIAL.intersection(email):
        raise AccountError(
            "an email address cannot contain / ? # % or \\ (it is part of the account's "
            "web address)",
            field="email",
        )
    if len(email) > 255 or not _CANONICAL_EMAIL.match(email):
        raise AccountError("enter a valid email address", field="email")
    return email


def is_canonical_email(value: str) -> bool:
    """Whether ``value`` is an email exactly as a new account would store it."""
    try:
        return normalize_email(value) == value
    except AccountError:
        return False


def _lookup_key(email: str) -> str | None:
    """The stored form of an existing account's email (older accounts may predate the
    rules of ``normalize_email``), or None when it cannot be one."""
    email = email.strip().lower()
    return email if _EMAIL.match(email) and len(email) <= 255 else None


def check_password(password: str) -> None:
    """Raise AccountError when a new password is too weak."""
    minimum = current_app.config["AUTHZ"].password_min_length
    if len(password) < minimum:
        raise AccountError(
            f"the password must have at least {minimum} characters", field="password"
        )
    if len(password) > 1024:
        raise AccountError("the password must have at most 1024 characters", field="password")
    # Credential stuffing and spraying try the most common passwords first.
    if password.lower() in common_passwords():
        raise AccountError(
            "this password is one of the 10,000 most common ones; choose another",
            field="password",
        )


@functools.cache
def common_passwords() -> frozenset[str]:
    """The 10,000 most common passwords, lower-case (package data, see its header)."""
    text = files("service").joinpath("data", "common-passwords.txt").read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def active_subjects(session: Session) -> Sequence[str]:
    """Return the subjects of active accounts (the lockout guard's view of users)."""
    # Unverified accounts hold the default role only, whatever rows name their email.
    return session.scalars(
        sa.select(User.email).where(User.active.is_(True), User.verified_at.is_not(None))
    ).all()


def is_active(session: Session, subject: str) -> bool:
    """Whether one subject is an active, verified account (one indexed lookup)."""
    found = session.scalar(
        sa.select(User.id).where(
            User.email == subject, User.active.is_(True), User.verified_at.is_not(None)
        )
    )
    return found is not None


def decided_as(subjects: Iterable[str]) -> dict[str, str]:
    """Map each subject the middleware would decide as another to that other subject.

    What the middleware does with a request from an account or a token, for subjects
    named by the check API: a deactivated account is ``anonymous``, an account that has
    not verified its email is the default role (rows naming the address are not its
    yet), a revoked or expired token is ``anonymous``. Subjects without an account or a
    token (roles, emails of people who are not accounts here) are decided as named, and
    are left out. One query per kind of subject.
    """
    from service import tokens
    from service.models import ServiceToken

    emails, names = [], []
    for subject in subjects:
        if is_token(subject):
            names.append(subject[len("token:") :])
        elif "@" in subject:
            emails.append(subject)
    found: dict[str, str] = {}
    if emails:
        default = current_app.config["AUTHZ"].default_role
        for email, active, verified in db.session.execute(
            sa.select(User.email, User.active, User.verified_at).where(User.email.in_(emails))
        ):
            if not active:
                found[email] = ANONYMOUS
            elif verified is None:
                found[email] = default
    if names:
        for token in db.session.scalars(
            sa.select(ServiceToken).where(ServiceToken.name.in_(names))
        ):
            if tokens.state(token) != "active":
                found[token.subject] = ANONYMOUS
    db.session.rollback()  # end the read transaction now
    return found


def get(email: str) -> User | None:
    """Return the account with this email, or None."""
    key = _lookup_key(email)
    if key is None:
        return None
    return db.session.scalar(sa.select(User).where(User.email == key))


def require(email: str) -> User:
    """Return the account with this email, or raise AccountError."""
    user = get(email)
    if user is None:
        raise AccountError(f"no account with email {email.strip().lower()!r}")
    return user


def _users_filter(search: str) -> list[sa.ColumnElement[bool]] | None:
    """The conditions of an account search by email substring (None: none can match)."""
    if "\x00" in search:
        # No email holds a NUL, and PostgreSQL refuses one in any text (a 503 otherwise).
        return None
    if not search:
        return []
    # autoescape: a "%" or "_" typed in the search box is a character, not a wildcard.
    return [User.email.contains(search.lower(), autoescape=True)]


def _users_query(search: str) -> sa.Select[Any] | None:
    """Accounts ordered by email, filtered by a substring (None: none can match)."""
    conditions = _users_filter(search)
    if conditions is None:
        return None
    return sa.select(User).where(*conditions).order_by(User.email)


def list_users(search: str = "") -> list[User]:
    """Return accounts ordered by email, optionally filtered by a substring."""
    query = _users_query(search)
    return [] if query is None else list(db.session.scalars(query))


def users_page(
    search: str = "", *, page: int = 1, per_page: int = 50, clamp: bool = False
) -> tuple[list[User], int, int]:
    """One page of accounts ordered by email (filtered as list_users), how many match,
    and the page number (``clamp``: a page past the last is the last).

    The database counts and pages: a hundred thousand accounts are never loaded.
    """
    query, conditions = _users_query(search), _users_filter(search)
    if query is None or conditions is None:
        return [], 0, 1
    total = db.session.scalar(sa.select(sa.func.count(User.id)).where(*conditions)) or 0
    if clamp:
        page = min(max(1, page), max(1, -(-total // per_page)))
    found = db.session.scalars(query.limit(per_page).offset((page - 1) * per_page))
    return list(found), total, page


def active_emails(emails: Iterable[str]) -> list[str]:
    """The emails of active accounts among ``emails``, sorted."""
    wanted = sorted(set(emails))
    found: list[str] = []
    for start in range(0, len(wanted), 500):  # bounded IN lists
        query = sa.select(User.email).where(
            User.active.is_(True), User.email.in_(wanted[start : start + 500])
        )
        found.extend(db.session.scalars(query))
    return sorted(found)


def rule_warnings(rule: Rule, *, known: dict[str, bool] | None = None) -> list[str]:
    """The risky-row warnings of a row about to be written (editor, API and CLI alike).

    :param known: whether each subject has an account, filled as subjects are looked
        up; pass the same dict for many rows, so each subject is looked up once.
    """
    settings = current_app.config["AUTHZ"]
    exists = _exists
    if known is not None:

        def exists(subject: str) -> bool:
            if subject not in known:
                known[subject] = _exists(subject)
            return known[subject]

    return risks(
        rule,
        engine().snapshot,
        has_account=exists,
        everyone=(settings.default_role,),
    )


def _exists(subject: str) -> bool:
    """Whether an email has an account, or a ``token:NAME`` a live service token."""
    if is_token(subject):
        from service import tokens

        token = tokens.get(subject)
        return token is not None and tokens.state(token) == "active"
    return get(subject) is not None


def direct_roles(subject: str) -> list[str]:
    """Return the roles assigned directly to a subject (its g rows)."""
    return sorted(r.values[1] for r in views.view(engine().snapshot).links_of(subject))


def effective_rules(subject: str) -> list[Rule]:
    """Return the p rows that apply to a subject: its own and its roles', inherited too."""
    policy = engine()
    return views.view(policy.snapshot).rules_of(subject, *policy.roles_for(subject))


def known_roles() -> list[str]:
    """Return every role named in the policy (kept by the snapshot, change by change)."""
    return engine().snapshot.roles


def account_write(
    action: str,
    hook: Callable[[Session], object],
    *,
    actor: str,
    source: str,
    detail: str = "",
    sessions_end: bool = True,
    audit: bool = True,
) -> None:
    """Write account rows (``hook``) with their audit entry, in one transaction of their own.

    No policy row changes here, so no policy lock is taken and no lockout guard runs: a
    registration's role row goes through :func:`create`, a deactivation (which can take
    the editor from its last holder) through :func:`set_active`.

    :param sessions_end: every instance re-checks its cached sessions afterwards.
    :param audit: record an audit entry (a logout is not an event worth one).
    """
    policy = engine()
    store = policy.store
    db.session.rollback()  # end any read transaction before the write
    try:
        with store.transaction() as session:
            if sessions_end:
                # The revision row first, as the engine's writes take it: the same lock
                # order everywhere, so an account write never deadlocks with one.
                store.accounts_changed(session)
            hook(session)
            if audit:
                store.insert_audit(
                    session,
                    AuditEntry(
                        actor=actor[:255],
                        source=source,
                        action=action,
                        detail=detail,
                        revision=store.current_revision(session),
                    ),
                )
    except DATABASE_ERRORS as e:
        raise EngineUnavailable(f"the change was not saved: {database_reason(e)}") from e
    if sessions_end:
        policy.accounts_changed()
    if audit:
        log.info("%s by %s (%s)%s", action, actor, source, f"; {detail}" if detail else "")


def create(
    email: str,
    password: str,
    *,
    roles: Iterable[str] | None = None,
    actor: str,
    source: str,
    action: str = "user.create",
    verified: bool = True,
    force: bool = False,
) -> User:
    """Create an active account with its roles (default: the default role), atomically.

    :param verified: whether the creator vouches for the address (admins and the CLI do;
        web registration does not, and the account then proves it by a mailed link).
    :param force: go past the policy tests its role rows break (the CLI's ``--force``).
    """
    email = normalize_email(email)
    check_password(password)
    wanted = list(roles) if roles is not None else [current_app.config["AUTHZ"].default_role]
    for role in wanted:
        check_role(role)
    hashed = passwords().hash(password)

    def add_user(session: Session) -> None:
        if session.scalar(sa.select(User.id).where(User.email == email)) is not None:
            raise AccountError("an account with this email already exists", field="email")
        session.add(
            User(
                email=email,
                password_hash=hashed,
                session_token=new_session_token(),
                verified_at=utcnow() if verified else None,
            )
        )
        try:
            session.flush()
        except IntegrityError as e:  # a concurrent registration of the same email won
            raise AccountError("an account with this email already exists", field="email") from e

    db.session.rollback()  # end any read transaction before the write
    engine().apply(
        Change.adding(*(Rule.of("g", email, role) for role in wanted)),
        actor=actor,
        source=source,
        action=action,
        detail=email,
        hook=add_user,
        force=force,
    )
    return require(email)


def authenticate(email: str, password: str) -> User | None:
    """Return the active account for these credentials, or None; same cost either way."""
    email = _lookup_key(email) or ""
    user: User | None = (
        db.session.scalar(sa.select(User).where(User.email == email)) if email else None
    )
    ok = passwords().verify(user.password_hash if user else None, password)
    if not ok or user is None or not user.active:
        return None
    if passwords().needs_rehash(user.password_hash):
        user.password_hash = passwords().hash(password)
    user.last_login_at = utcnow()
    db.session.commit()
    return user


class _Unchanged(Exception):
    """The account is in the asked state already (nothing to write, nothing to audit)."""


def set_active(email: str, active: bool, *, actor: str, source: str, force: bool = False) -> bool:
    """Set an account active or not (a target state, never a toggle); deactivation ends
    its sessions at once and is judged by the lockout guard.

    :returns: False when the account was in that state already (nothing audited).
    """
    user = require(email)
    target, user_id = user.email, user.id
    if user.active == active:
        db.session.rollback()
        return False

    def update(session: Session) -> list[str]:
        done = session.execute(
            sa.update(User)
            .where(User.id == user_id, User.active.is_(not active))
            .values(active=active)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise _Unchanged  # another admin got there first
        if active:
            return []  # account_write bumped the accounts revision before this ran
        # Ended, not merely refused while inactive: reactivation revives no session. (The
        # engine took the revision row first; the accounts revision goes up with it.)
        session.execute(sessions.end_statement(user_id))
        engine().store.accounts_changed(session)
        return [target]

    db.session.rollback()
    try:
        if active:
            # Activation takes nothing from anyone: no policy lock, no guard.
            account_write("user.activate", update, actor=actor, source=source, detail=target)
        else:
            engine().apply(
                Change(),
                actor=actor,
                source=source,
                action="user.deactivate",
                detail=target,
                hook=update,
                force=force,
            )
            engine().accounts_changed()
    except _Unchanged:
        return False
    return True


def set_password(email: str, password: str, *, actor: str, source: str) -> User:
    """Set a new password and end every session of the account."""
    check_password(password)
    user = require(email)
    target, user_id = user.email, user.id
    hashed = passwords().hash(password)

    def update(session: Session) -> None:
        session.execute(sa.update(User).where(User.email == target).values(password_hash=hashed))
        session.execute(sessions.end_statement(user_id))

    db.session.rollback()
    account_write(
        "user.password",
        update,
        actor=actor,
        source=source,
        detail=target,
    )
    if actor != target:
        # Whoever set it, the owner hears of it (a delegated helpdesk is a risk too).
        _mail_later(
            target,
            "Your password was changed",
            f"The password of your account {target} was set by {actor} ({source}); every "
            "session of the account has ended.\nIf you did not expect this, contact your "
            "administrator.\n",
        )
    return require(target)


# -- sessions and the account page ------------------------------------------------------


def start_session(user: User, *, address: str, agent: str) -> sessions.SessionUser:
    """Record a new login of ``user`` on this device; return it with its fresh id."""
    started = sessions.start(user, address=address, agent=agent)
    db.session.commit()
    return started


def list_sessions(user_id: int) -> list[UserSession]:
    """Return an account's live sessions, the most recently used first."""
    found = sessions.live(user_id)
    db.session.rollback()
    return found


def end_sessions_of(
    user_id: int,
    email: str,
    *,
    actor: str,
    source: str,
    only: int | None = None,
    keep: int | None = None,
    action: str = "session.end",
    audit: bool = True,
) -> int:
    """End an account's sessions (``only`` one, or all but ``keep``); return how many.

    Every instance drops its cached sessions before its next request is decided (the
    accounts revision is bumped in the same transaction).
    """
    ended = [0]

    def end(session: Session) -> None:
        result = session.execute(sessions.end_statement(user_id, only=only, keep=keep))
        ended[0] = max(result.rowcount or 0, 0)  # type: ignore[attr-defined]

    db.session.rollback()  # end any read transaction before the write
    account_write(
        action,
        end,
        actor=actor,
        source=source,
        detail=email,
        audit=audit,
    )
    if ended[0]:
        log.info("%s ended %d session(s) of %s (%s)", actor, ended[0], email, action)
    return ended[0]


def end_all_sessions(user: User) -> None:
    """End every session of an account (password reset, admins); the actor is whoever is
    logged in, or the account itself."""
    who = getattr(current_user, "email", None) if current_user else None
    actor = who if isinstance(who, str) else user.email
    end_sessions_of(user.id, user.email, actor=actor, source="web", action="session.end_all")


def change_own_password(email: str, current: str, new: str, *, keep_session: int | None) -> int:
    """Change an account's password, its current one required; end its OTHER sessions.

    :returns: how many other sessions ended.
    :raises AccountError: the current password is wrong (field ``current``) or the new
        one too weak (field ``password``).
    """
    user = require(email)
    target, user_id, stored = user.email, user.id, user.password_hash
    db.session.rollback()
    # Verified even when the new password is refused, so the form's answers do not
    # tell a session thief anything without the password.
    if not passwords().verify(stored, current):
        raise AccountError("the current password is wrong", field="current")
    check_password(new)
    hashed = passwords().hash(new)
    ended = [0]

    def update(session: Session) -> None:
        # Only if the hash is still the one verified: two concurrent changes cannot both win.
        changed = session.execute(
            sa.update(User)
            .where(User.id == user_id, User.password_hash == stored)
            .values(password_hash=hashed)
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise AccountError("the password was changed meanwhile; try again", field="current")
        result = session.execute(sessions.end_statement(user_id, keep=keep_session))
        ended[0] = max(result.rowcount or 0, 0)  # type: ignore[attr-defined]

    account_write(
        "user.password_change",
        update,
        actor=target,
        source="web",
        detail=target,
    )
    log.info("%s changed their password; %d other session(s) ended", target, ended[0])
    return ended[0]


# -- email ownership, password reset, invitations -----------------------------------


class LinkError(Exception):
    """A mailed link cannot be used; ``reason`` is ``expired`` or ``invalid``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Fixed salts: a token made for one purpose never passes as another.
_VERIFY, _RESET, _INVITE = "authz.verify-email", "authz.reset-password", "authz.invite"


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=purpose)


def _fingerprint(purpose: str, *state: object) -> str:
    """A keyed digest of an account's state: a link dies when the state changes.

    This is what makes links single-use: verifying sets ``verified_at`` and a reset
    changes the password hash, so the same link no longer matches. Keyed, so a token's
    readable payload reveals nothing about the password hash.
    """
    key = current_app.config["SECRET_KEY"].encode()
    message = "\x1f".join([purpose, *(str(part) for part in state)]).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def _verify_state(user: User) -> str:
    return _fingerprint(_VERIFY, user.id, user.email, user.verified_at)


def _reset_state(user: User) -> str:
    return _fingerprint(_RESET, user.id, user.email, user.password_hash, user.active)


def _load(purpose: str, token: str, max_age: int) -> object:
    try:
        return _serializer(purpose).loads(token, max_age=max_age)
    except SignatureExpired as e:
        raise LinkError("expired") from e
    except BadSignature as e:
        raise LinkError("invalid") from e


def _account_by_token(purpose: str, token: str, max_age: int) -> tuple[User, str]:
    data = _load(purpose, token, max_age)
    if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], int)):
        raise LinkError("invalid")
    user = db.session.get(User, data[0])
    if user is None:
        raise LinkError("invalid")
    return user, str(data[1])


def link(path: str) -> str | None:
    """The absolute URL of ``path`` on this service, for mail; None when it has no address.

    Built from the public URL setting, never from the request's Host header: a client
    choosing the host of a reset link sent to someone else would receive its token.
    """
    settings: Settings = current_app.config["AUTHZ"]
    if settings.public_url:
        return settings.public_url + path
    if settings.env is Env.PRODUCTION:
        log.error("AUTHZ_PUBLIC_URL is not set: no link mailed for %s", path.split("/")[1])
        return None
    return "http://127.0.0.1:5000" + path


def _mail_later(to: str, subject: str, body: str) -> None:
    mail.mailer().send_later(to, subject, body)


def is_verified(user: User) -> bool:
    """Whether the account proved it owns its email."""
    return user.verified_at is not None


def send_verification(user: User) -> None:
    """Mail the account a link that verifies its email (in the background)."""
    url = link(f"/verify/{_serializer(_VERIFY).dumps([user.id, _verify_state(user)])}")
    if url is None:
        return
    hours = current_app.config["AUTHZ"].verify_max_age // 3600
    _mail_later(
        user.email,
        "Verify your email address",
        f"Open this link to verify your email address {user.email}:\n\n{url}\n\n"
        f"The link works once, for {hours} hours. Until then your account has the "
        "permissions of a new user only.\nIf you did not create this account, ignore "
        "this message.\n",
    )


def register(email: str, password: str) -> User:
    """Create an account from the register page: default role, email not yet verified."""
    with _self_service(email):
        user = create(
            email,
            password,
            actor=email.strip().lower(),
            source="web",
            action="user.register",
            verified=False,
        )
    send_verification(user)
    return user


@contextmanager
def _self_service(email: str) -> Iterator[None]:
    """A visitor's own account creation refused by policy tests: an AccountError that says
    so without naming the tests or the rules (those are for administrators, and logged)."""
    try:
        yield
    except ExpectationsBroken as e:
        log.warning("registration of %s refused: %s", email.strip().lower(), e)
        raise AccountError(
            "an account with this email cannot be created here; ask an administrator",
            field="email",
        ) from None


def verify_email(token: str) -> User:
    """Mark the account of a verification link verified; LinkError when it cannot be."""
    user, state = _account_by_token(_VERIFY, token, current_app.config["AUTHZ"].verify_max_age)
    if user.verified_at is not None or not hmac.compare_digest(state, _verify_state(user)):
        raise LinkError("invalid")  # used already, or made for an earlier address
    target, expected = user.id, user.email

    def update(session: Session) -> None:
        done = session.execute(
            sa.update(User)
            .where(User.id == target, User.email == expected, User.verified_at.is_(None))
            .values(verified_at=utcnow())
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise LinkError("invalid")  # a concurrent click won

    db.session.rollback()
    # accounts_changed: every instance drops its cached sessions, so the account's rows
    # apply from its very next request.
    account_write(
        "user.verify",
        update,
        actor=expected,
        source="web",
        detail=expected,
    )
    return require(expected)


#: Stands in for the account of an unknown address, so a reset request does the same work.
_NOBODY_STATE = "0" * 32


def request_password_reset(email: str) -> None:
    """Mail a reset link if an active account has this email; the same work either way.

    The caller answers the same whatever happened: this reveals nothing about accounts.
    """
    user = get(email)
    known = user is not None and user.active
    uid = user.id if user is not None and known else 0
    state = _reset_state(user) if user is not None and known else _NOBODY_STATE
    token = _serializer(_RESET).dumps([uid, state])
    url = link(f"/password/reset/{token}") or ""
    minutes = current_app.config["AUTHZ"].reset_max_age // 60
    body = (
        f"Open this link to choose a new password for {email}:\n\n{url}\n\n"
        f"The link works once, for {minutes} minutes, and ends every session of the "
        "account.\nIf you did not ask for it, ignore this message.\n"
    )
    db.session.rollback()
    if user is not None and known and url:
        # In the background: the answer's time does not depend on the mail server.
        _mail_later(user.email, "Reset your password", body)


def reset_account(token: str) -> User:
    """Return the account a reset link is for, if the link is still good (no change)."""
    user, state = _account_by_token(_RESET, token, current_app.config["AUTHZ"].reset_max_age)
    if not user.active or not hmac.compare_digest(state, _reset_state(user)):
        raise LinkError("invalid")  # used already, or the password changed since
    return user


def reset_password(token: str, password: str) -> User:
    """Set a new password through a reset link; every session of the account ends.

    The link proves the owner reads the account's mail, so it also verifies the email.
    """
    user = reset_account(token)
    check_password(password)
    hashed = passwords().hash(password)
    target, old_hash = user.id, user.password_hash

    def update(session: Session) -> None:
        done = session.execute(
            sa.update(User)
            .where(User.id == target, User.password_hash == old_hash, User.active.is_(True))
            .values(
                password_hash=hashed,
                verified_at=sa.func.coalesce(User.verified_at, utcnow()),
            )
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise LinkError("invalid")  # a concurrent reset with the same link won

    email = user.email
    db.session.rollback()
    account_write(
        "user.password-reset",
        update,
        actor=email,
        source="web",
        detail=email,
    )
    user = require(email)
    end_all_sessions(user)
    return user


def invite(email: str, *, actor: str, source: str) -> str:
    """Return an invitation link for an address with no account (audited), and mail it.

    :raises AccountError: the address is not valid, already has an account, or the
        service has no public address to put in the link.
    """
    if current_app.config["AUTHZ"].registration == "closed":
        raise AccountError("registration is closed (AUTHZ_REGISTRATION=closed)", field="email")
    email = normalize_email(email)
    if get(email) is not None:
        raise AccountError("an account with this email already exists", field="email")
    url = link(f"/register/{_serializer(_INVITE).dumps(email)}")
    if url is None:
        raise AccountError("set AUTHZ_PUBLIC_URL: the invitation link needs this service's address")
    db.session.rollback()
    # A hook makes an empty change an audited one (the invitation is the event).
    account_write(
        "user.invite",
        lambda session: None,
        actor=actor,
        source=source,
        detail=email,
        sessions_end=False,
    )
    days = max(1, current_app.config["AUTHZ"].invite_max_age // 86400)
    _mail_later(
        email,
        "You are invited",
        f"You are invited to create an account for {email}:\n\n{url}\n\n"
        f"The link works for {days} day(s), until the account is created.\n",
    )
    return url


def invited_email(token: str) -> str:
    """Return the address an invitation link is for; LinkError when it cannot be used."""
    email = _load(_INVITE, token, current_app.config["AUTHZ"].invite_max_age)
    if not isinstance(email, str) or not is_canonical_email(email):
        raise LinkError("invalid")
    if get(email) is not None:
        raise LinkError("invalid")  # used: the account exists
    return email


def register_invited(token: str, password: str) -> User:
    """Create the account of an invitation link; the link proves the address."""
    email = invited_email(token)
    with _self_service(email):
        return create(
            email, password, actor=email, source="web", action="user.register", verified=True
        )


def recover_admin(email: str, *, actor: str) -> tuple[User, str | None]:
    """Give an operator who locked everyone out an admin account back (CLI only, audited).

    Creates the account (with a generated password, returned) or reactivates, verifies
    and re-grants an existing one. Forced past the lockout guard: this is the way back.
    """
    admin_role = current_app.config["AUTHZ"].admin_role
    if get(email) is None:
        password = secrets.token_urlsafe(12)
        user = create(
            email,
            password,
            roles=[admin_role],
            actor=actor,
            source="cli",
            action="user.recover-admin",
        )
        return user, password
    target = require(email).email

    def update(session: Session) -> None:
        session.execute(
            sa.update(User)
            .where(User.email == target)
            .values(active=True, verified_at=sa.func.coalesce(User.verified_at, utcnow()))
        )
        engine().store.accounts_changed(session)

    db.session.rollback()
    engine().apply(
        Change.adding(Rule.of("g", target, admin_role)),
        actor=actor,
        source="cli",
        action="user.recover-admin",
        detail=target,
        hook=update,
        force=True,
    )
    engine().accounts_changed()
    return require(target), None


def member(subject: str) -> str:
    """The ``g`` row member a subject names: a role or an email as given, a live token.

    An email needs no account yet (a grant ahead of registration: rows naming an address
    apply once its owner has verified it). A token must exist: unlike an email, its name
    is ours to hand out, and a row for a token not yet created would arm whichever token
    is later created by that name.
    """
    if is_token(subject):
        from service import tokens

        token = tokens.require(subject)
        if token.revoked_at is not None:
            raise AccountError(f"token {token.name!r} is revoked", field="member")
        return token.subject
    return subject


def check_role(role: str) -> None:
    """Raise AccountError (field ``role``) unless ``role`` is a role some row names: a typo
    must not create a row for a role nobody defined."""
    if not is_role(role):
        raise AccountError(f"{role!r} is not a role name ([a-z][a-z0-9_-]*)", field="role")
    if not engine().snapshot.has_role(role):
        known = known_roles()
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise AccountError(
            f"no role {role!r} in the policy (known: {shown or 'none'})", field="role"
        )


# -- login throttling -----------------------------------------------------------------
#
# Every attempt is counted before its password is checked, by one INSERT .. ON CONFLICT
# DO UPDATE .. WHERE not blocked .. RETURNING per counter: the row's lock (PostgreSQL)
# or the database's write lock (SQLite) orders concurrent attempts, so at most
# login_max_failures of them reach the check before the delay starts. Counters:
#   acct:<email>            the account, from addresses it never logged in from;
#   pair:<address>|<email>  the account, from an address it logged in from before
#                           (an attacker elsewhere cannot slow its owner down there);
#   addr:<address>          the address, any account, except accounts that logged in
#                           from it before (a shared proxy or NAT keeps working);
#   ok:<address>|<email>    the last successful login of the account from the address.
# A counter over its limit blocks its key for a delay that doubles per further attempt.

#: How long a successful login from an address makes it "known" for that account.
KNOWN_FOR = dt.timedelta(days=30)
#: Stale counters deleted per counted attempt (pruning on write, bounded).
PRUNE_BATCH = 200


class LoginThrottled(Exception):
    """Login attempts for this account or from this address must wait ``retry_after`` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attempt:
    """A login attempt let through to the password check, and the counters it used."""

    email: str
    address: str
    #: ``acct:`` or ``pair:``: the counter a success clears.
    account_key: str
    #: ``addr:``, when the address counter counted it: a success takes it back.
    address_key: str | None
    #: The delays (seconds) this attempt starts should it fail, by counter kind.
    delays: dict[str, float]


def count_attempt(email: str, address: str) -> Attempt:
    """Count a login attempt against its counters; raise LoginThrottled when one waits.

    Called before the password is checked: the attempt counts as a failure until
    :func:`login_succeeded` clears it. A refused attempt counts nowhere.
    """
    settings = current_app.config["AUTHZ"]
    now = utcnow()
    typed = _typed(email)
    known = _known(typed, address, now)
    account_key = f"pair:{address}|{typed}" if known else f"acct:{typed}"
    limits = {account_key: (settings.login_max_failures, settings.login_max_delay)}
    if not known:
        limits[f"addr:{address}"] = (
            settings.login_address_max_failures,
            settings.login_address_max_delay,
        )
    since = now - dt.timedelta(seconds=settings.login_window)
    table = LoginThrottle.__table__
    db.session.rollback()  # end this request's read transaction before the write
    with db.engine.connect() as conn:
        counted: dict[str, int] = {}
        delays: dict[str, float] = {}
        # Sorted: two attempts sharing keys take their locks in the same order.
        for key in sorted(limits):
            failures = conn.execute(_count(conn.dialect.name, key, now, since)).scalar()
            if failures is None:  # this key waits: nothing of this attempt is counted
                conn.rollback()
                raise LoginThrottled(_retry_after(conn, list(limits), now))
            counted[key] = failures
        for key, failures in counted.items():
            limit, cap = limits[key]
            if failures >= limit:
                doubling = min(failures - limit, 32)
                delay = min(cap, settings.login_delay * 2**doubling)
                conn.execute(
                    sa.update(table)
                    .where(table.c.key == key)
                    .values(blocked_until=now + dt.timedelta(seconds=delay))
                )
                delays[key.split(":", 1)[0]] = delay
        conn.commit()
        _prune(conn, now, since)
    address_key = None if known else f"addr:{address}"
    return Attempt(
        email=typed,
        address=address,
        account_key=account_key,
        address_key=address_key,
        delays=delays,
    )


def login_failed(attempt: Attempt) -> None:
    """Report the delays a failed attempt started (it was counted already)."""
    for kind, delay in attempt.delays.items():
        auth_event(Event.LOCKOUT, attempt.email, counter=kind, delay=f"{delay:g}")


def login_succeeded(attempt: Attempt) -> None:
    """Clear the account's counter and remember the address as one it logs in from."""
    now = utcnow()
    table = LoginThrottle.__table__
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(table)
            .where(table.c.key == attempt.account_key)
            .values(failures=0, blocked_until=None, last_at=now)
        )
        if attempt.address_key is not None:
            # A right password is no failure of the address: its count goes back.
            conn.execute(
                sa.update(table)
                .where(table.c.key == attempt.address_key, table.c.failures > 0)
                .values(failures=table.c.failures - 1)
            )
        ok = f"ok:{attempt.address}|{attempt.email}"
        conn.execute(
            _insert(conn.dialect.name)(table)
            .values(key=ok, failures=0, last_at=now, blocked_until=None)
            .on_conflict_do_update(index_elements=[table.c.key], set_={"last_at": now})
        )


def unthrottle(
    *, email: str | None = None, address: str | None = None, actor: str, source: str
) -> int:
    """Clear an account's or an address's login counters (audited); return how many."""
    table = LoginThrottle.__table__
    if email is not None:
        typed = _typed(email)
        which = sa.or_(
            table.c.key == f"acct:{typed}",
            sa.and_(
                table.c.key.startswith("pair:"),
                table.c.key.endswith(f"|{typed}", autoescape=True),
            ),
        )
        detail = typed
    elif address is not None:
        address = address.strip()
        which = sa.or_(
            table.c.key == f"addr:{address}",
            table.c.key.startswith(f"pair:{address}|", autoescape=True),
        )
        detail = f"address {address}"
    else:
        raise AccountError("name an account or an address")
    if not detail or "\x00" in detail:
        raise AccountError("name an account or an address")
    cleared = 0

    def delete(session: Session) -> None:
        nonlocal cleared
        # A DELETE returns a CursorResult; Session.execute is typed for any statement.
        result = cast("sa.CursorResult[Any]", session.execute(sa.delete(table).where(which)))
        cleared = result.rowcount

    db.session.rollback()
    account_write(
        "login.unthrottle", delete, actor=actor, source=source, detail=detail, sessions_end=False
    )
    return cleared


def _count(dialect: str, key: str, now: dt.datetime, since: dt.datetime) -> sa.Executable:
    """One statement: add an attempt to ``key`` unless it waits; return its count or none."""
    table = LoginThrottle.__table__
    quiet = sa.and_(
        table.c.last_at < since,
        sa.or_(table.c.blocked_until.is_(None), table.c.blocked_until < since),
    )
    statement: sa.Executable = (
        _insert(dialect)(table)
        .values(key=key, failures=1, last_at=now, blocked_until=None)
        .on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                # A window without attempts (after the last delay ended) starts afresh.
                "failures": sa.case((quiet, 1), else_=table.c.failures + 1),
                "last_at": now,
            },
            where=sa.or_(table.c.blocked_until.is_(None), table.c.blocked_until <= now),
        )
        .returning(table.c.failures)
    )
    return statement


def _insert(dialect: str) -> Any:
    # Both dialects spell the upsert alike; SQLAlchemy has it per dialect only.
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _retry_after(conn: sa.Connection, keys: list[str], now: dt.datetime) -> int:
    table = LoginThrottle.__table__
    until: dt.datetime | None = conn.execute(
        sa.select(sa.func.max(table.c.blocked_until)).where(table.c.key.in_(keys))
    ).scalar()
    conn.rollback()
    if until is None:
        return 1
    until = until.replace(tzinfo=dt.UTC) if until.tzinfo is None else until
    return max(1, math.ceil((until - now).total_seconds()))


def _known(typed: str, address: str, now: dt.datetime) -> bool:
    table = LoginThrottle.__table__
    last = db.session.execute(
        sa.select(table.c.last_at).where(table.c.key == f"ok:{address}|{typed}")
    ).scalar()
    return last is not None and last >= now - KNOWN_FOR


def _prune(conn: sa.Connection, now: dt.datetime, since: dt.datetime) -> None:
    """Delete up to PRUNE_BATCH counters nobody has used for a window (pruning on write)."""
    table = LoginThrottle.__table__
    stale = sa.or_(
        sa.and_(
            ~table.c.key.startswith("ok:"),
            table.c.last_at < since,
            sa.or_(table.c.blocked_until.is_(None), table.c.blocked_until < since),
        ),
        sa.and_(table.c.key.startswith("ok:"), table.c.last_at < now - KNOWN_FOR),
    )
    keys = sa.select(table.c.key).where(stale).limit(PRUNE_BATCH).scalar_subquery()
    conn.execute(sa.delete(table).where(table.c.key.in_(keys)))
    conn.commit()


def _typed(email: str) -> str:
    # Control characters dropped: PostgreSQL refuses a NUL in a text value, and no
    # account's email holds one (a typed NUL must count as a failure, not a 503).
    return _CONTROL_CHARS.sub("", email.strip().lower())[:240]
