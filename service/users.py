"""Accounts: register, authenticate, (de)activate, change password, assign roles.

The only module views and commands use for account data. Every change that touches the
policy (role rows) or ends sessions goes through the engine's write path, so the account
row, the role rows and the audit entry commit together.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from collections.abc import Sequence

import sqlalchemy as sa
from flask import current_app
from flask_login import current_user
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authz import Change
from authz import PolicyEngine
from authz import Rule
from authz.risks import risks
from authz.rules import EMAIL_PATTERN
from authz.rules import is_role
from service import sessions
from service.extensions import db
from service.models import LoginFailure
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


def active_subjects(session: Session) -> Sequence[str]:
    """Return the subjects of active accounts (the lockout guard's view of users)."""
    return session.scalars(sa.select(User.email).where(User.active.is_(True))).all()


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


def list_users(search: str = "") -> list[User]:
    """Return accounts ordered by email, optionally filtered by a substring."""
    query = sa.select(User).order_by(User.email)
    if "\x00" in search:
        # No email holds a NUL, and PostgreSQL refuses one in any text (a 503 otherwise).
        return []
    if search:
        # autoescape: a "%" or "_" typed in the search box is a character, not a wildcard.
        query = query.where(User.email.contains(search.lower(), autoescape=True))
    return list(db.session.scalars(query))


def rule_warnings(rule: Rule) -> list[str]:
    """The risky-row warnings of a row about to be written (editor, API and CLI alike)."""
    settings = current_app.config["AUTHZ"]
    return risks(
        rule,
        engine().snapshot,
        has_account=lambda email: get(email) is not None,
        everyone=(settings.default_role,),
    )


def direct_roles(subject: str) -> list[str]:
    """Return the roles assigned directly to a subject (its g rows)."""
    return engine().snapshot.direct_roles(subject)


def effective_rules(subject: str) -> list[Rule]:
    """Return the p rows that apply to a subject: its own and its roles', inherited too."""
    policy = engine()
    names = {subject, *policy.roles_for(subject)}
    return [r for r in policy.rules() if r.ptype == "p" and r.values[0] in names]


def known_roles() -> list[str]:
    """Return every role named in the policy."""
    names = set()
    for r in engine().rules():
        if r.ptype == "g":
            names.add(r.values[1])
            if is_role(r.values[0]):
                names.add(r.values[0])
        elif is_role(r.values[0]):
            names.add(r.values[0])
    return sorted(names)


def create(
    email: str,
    password: str,
    *,
    roles: Iterable[str] | None = None,
    actor: str,
    source: str,
    action: str = "user.create",
) -> User:
    """Create an active account with its roles (default: the default role), atomically."""
    email = normalize_email(email)
    check_password(password)
    wanted = list(roles) if roles is not None else [current_app.config["AUTHZ"].default_role]
    for role in wanted:
        _check_role(role)
    hashed = passwords().hash(password)

    def add_user(session: Session) -> None:
        if session.scalar(sa.select(User.id).where(User.email == email)) is not None:
            raise AccountError("an account with this email already exists", field="email")
        session.add(User(email=email, password_hash=hashed, session_token=new_session_token()))
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
    )
    return require(email)


def authenticate(email: str, password: str) -> User | None:
    """Return the active account for these credentials, or None; same cost either way."""
    email = _lookup_key(email) or ""
    user = db.session.scalar(sa.select(User).where(User.email == email)) if email else None
    ok = passwords().verify(user.password_hash if user else None, password)
    if not ok or user is None or not user.active:
        return None
    if passwords().needs_rehash(user.password_hash):
        user.password_hash = passwords().hash(password)
    user.last_login_at = utcnow()
    db.session.commit()
    return user


def set_active(email: str, active: bool, *, actor: str, source: str, force: bool = False) -> User:
    """Activate or deactivate an account; deactivation ends its sessions at once."""
    user = require(email)
    target, user_id = user.email, user.id

    def update(session: Session) -> None:
        session.execute(sa.update(User).where(User.email == target).values(active=active))
        if not active:
            # Ended, not merely refused while inactive: reactivation revives no session.
            session.execute(sessions.end_statement(user_id))

    db.session.rollback()
    engine().apply(
        Change(),
        actor=actor,
        source=source,
        force=force,
        action="user.activate" if active else "user.deactivate",
        accounts_changed=True,
        detail=target,
        hook=update,
    )
    return require(target)


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
    engine().apply(
        Change(),
        actor=actor,
        source=source,
        action="user.password",
        detail=target,
        hook=update,
        accounts_changed=True,
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
    engine().apply(
        Change(),
        actor=actor,
        source=source,
        action=action,
        detail=email,
        hook=end,
        accounts_changed=True,
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

    engine().apply(
        Change(),
        actor=target,
        source="web",
        action="user.password_change",
        detail=target,
        hook=update,
        accounts_changed=True,
    )
    log.info("%s changed their password; %d other session(s) ended", target, ended[0])
    return ended[0]


def assign_role(subject: str, role: str, *, actor: str, source: str, force: bool = False) -> bool:
    """Give a user (by email) or a role a role; return False when it already had it."""
    member = _member(subject)
    _check_role(role)
    applied = engine().apply(
        Change.adding(Rule.of("g", member, role)),
        actor=actor,
        source=source,
        action="role.assign",
        force=force,
    )
    return applied.changed


def remove_role(subject: str, role: str, *, actor: str, source: str, force: bool = False) -> None:
    """Take a role away from a user or a role; AccountError when it did not have it."""
    # No account lookup: a row naming an account that no longer exists must still go.
    member = subject.strip() if is_role(subject.strip()) else subject.strip().lower()
    rule = Rule.of("g", member, role)
    if rule not in engine().snapshot.ruleset:
        raise AccountError(f"{member} does not have role {role!r}")
    engine().apply(
        Change.removing(rule), actor=actor, source=source, action="role.remove", force=force
    )


def _member(subject: str) -> str:
    subject = subject.strip()
    if is_role(subject):
        return subject
    return require(subject).email


def _check_role(role: str) -> None:
    if not is_role(role):
        raise AccountError(f"{role!r} is not a role name ([a-z][a-z0-9_-]*)")
    known = known_roles()
    if role not in known:
        raise AccountError(f"unknown role {role!r} (known: {', '.join(known) or 'none'})")


# -- login throttling -----------------------------------------------------------------


def throttled(email: str, address: str) -> bool:
    """Whether logins for this email or from this address are refused for now."""
    settings = current_app.config["AUTHZ"]
    since = utcnow() - dt.timedelta(seconds=settings.login_window)
    counts = dict(
        db.session.execute(
            sa.select(LoginFailure.key, sa.func.count())
            .where(LoginFailure.key.in_(_keys(email, address)), LoginFailure.at >= since)
            .group_by(LoginFailure.key)
        ).all()
    )
    by_email = counts.get(_keys(email, address)[0], 0)
    by_address = counts.get(f"addr:{address}", 0)
    return by_email >= settings.login_max_failures or by_address >= 4 * settings.login_max_failures


def record_failure(email: str, address: str) -> None:
    """Count a failed login against the email and the client address."""
    for key in _keys(email, address):
        db.session.add(LoginFailure(key=key))
    db.session.commit()


def clear_failures(email: str) -> None:
    """Forget the failed logins of an email after a successful one."""
    db.session.execute(sa.delete(LoginFailure).where(LoginFailure.key == f"email:{email}"))
    db.session.commit()


def _keys(email: str, address: str) -> list[str]:
    # Control characters dropped: PostgreSQL refuses a NUL in a text value, and no
    # account's email holds one (a typed NUL must count as a failure, not a 503).
    typed = _CONTROL_CHARS.sub("", email.strip().lower())[:240]
    return [f"email:{typed}", f"addr:{address}"]
