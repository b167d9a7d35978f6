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
import re
import secrets
from collections.abc import Iterable
from collections.abc import Sequence
from importlib.resources import files

import sqlalchemy as sa
from flask import current_app
from itsdangerous import BadSignature
from itsdangerous import SignatureExpired
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authz import Change
from authz import PolicyEngine
from authz import Rule
from authz.risks import risks
from authz.rules import EMAIL_PATTERN
from authz.rules import is_role
from service import mail
from service.config import Env
from service.extensions import db
from service.models import LoginFailure
from service.models import User
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
    verified: bool = True,
) -> User:
    """Create an active account with its roles (default: the default role), atomically.

    :param verified: whether the creator vouches for the address (admins and the CLI do;
        web registration does not, and the account then proves it by a mailed link).
    """
    email = normalize_email(email)
    check_password(password)
    wanted = list(roles) if roles is not None else [current_app.config["AUTHZ"].default_role]
    for role in wanted:
        _check_role(role)
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
    target = user.email

    def update(session: Session) -> None:
        values: dict[str, object] = {"active": active}
        if not active:
            values["session_token"] = new_session_token()
        session.execute(sa.update(User).where(User.email == target).values(**values))

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
    target = user.email
    hashed = passwords().hash(password)

    def update(session: Session) -> None:
        session.execute(
            sa.update(User)
            .where(User.email == target)
            .values(password_hash=hashed, session_token=new_session_token())
        )

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


def end_sessions(email: str) -> None:
    """Rotate the session token, so every existing session cookie of the account is dead."""

    def rotate(session: Session) -> None:
        session.execute(
            sa.update(User).where(User.email == email).values(session_token=new_session_token())
        )

    db.session.rollback()
    engine().apply(
        Change(),
        actor=email,
        source="web",
        action="user.logout",
        hook=rotate,
        accounts_changed=True,
        audit=False,
    )


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
    settings = current_app.config["AUTHZ"]
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
    engine().apply(
        Change(),
        actor=expected,
        source="web",
        action="user.verify",
        detail=expected,
        hook=update,
        accounts_changed=True,
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
    engine().apply(
        Change(),
        actor=email,
        source="web",
        action="user.password-reset",
        detail=email,
        hook=update,
        accounts_changed=True,
    )
    user = require(email)
    end_all_sessions(user)
    return user


def end_all_sessions(user: User) -> None:
    """End every session of the account, on every instance, at its next request."""
    end_sessions(user.email)


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
    engine().apply(
        Change(),
        actor=actor,
        source=source,
        action="user.invite",
        detail=email,
        hook=lambda session: None,
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
    return create(email, password, actor=email, source="web", action="user.register", verified=True)


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

    db.session.rollback()
    engine().apply(
        Change.adding(Rule.of("g", target, admin_role)),
        actor=actor,
        source="cli",
        action="user.recover-admin",
        detail=target,
        hook=update,
        accounts_changed=True,
        force=True,
    )
    return require(target), None


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
