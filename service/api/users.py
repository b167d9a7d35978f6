"""Accounts through the API: list, look up, activate and deactivate, end sessions."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask import request

from service import users as accounts
from service.api import schemas
from service.api.policy import rule_item
from service.api.policy import rule_names
from service.api.views import SOURCE
from service.api.views import Problem
from service.api.views import actor
from service.api.views import body
from service.api.views import bp
from service.api.views import ok
from service.models import User
from service.users import engine


def user_item(user: User) -> dict[str, Any]:
    """Return the JSON shape of an account in a list: its state and direct roles."""
    return {
        "email": user.email,
        "active": user.active,
        "roles": accounts.direct_roles(user.email),
        "created_at": user.created_at.isoformat(),
    }


def find_user(email: str) -> User:
    """Return the account with exactly this email, or a 404 problem."""
    user = accounts.get(email)
    if user is None or user.email != email:
        raise Problem(404, "Not found", f"no account with email {email!r}")
    return user


@bp.get("/users")
def users() -> Response:
    """List accounts by email, optionally those containing ``q``, one page at a time."""
    page, per_page = schemas.paging(request.args)
    found, total, page = accounts.users_page(
        request.args.get("q", "").strip(), page=page, per_page=per_page
    )
    listing = {"total": total, "page": page, "per_page": per_page}
    return ok({"revision": engine().revision, **listing, "items": [user_item(u) for u in found]})


@bp.get("/users/<email:email>")
def user(email: str) -> Response:
    """Return one account with its effective roles and effective permissions."""
    found = find_user(email)
    policy = engine()
    revision = policy.revision
    names = rule_names()
    detail = {
        **user_item(found),
        "last_login_at": found.last_login_at.isoformat() if found.last_login_at else None,
        "effective_roles": policy.roles_for(found.email),
        "permissions": [rule_item(r, names) for r in accounts.effective_rules(found.email)],
    }
    return ok({"revision": revision, "user": detail})


def set_active(email: str, active: bool) -> Response:
    """Activate or deactivate an account; the lockout guard may refuse a deactivation."""
    found = find_user(email)
    if request.get_data(cache=True):
        body({})  # nothing to send; a field here is a client mistake worth reporting
    changed = accounts.set_active(found.email, active, actor=actor(), source=SOURCE)
    return ok(
        {
            "revision": engine().revision,
            "changed": changed,
            "user": user_item(accounts.require(found.email)),
        }
    )


@bp.post("/users/<email:email>/deactivate")
def deactivate(email: str) -> Response:
    """Deactivate an account: it is anonymous at once and every session of it ends."""
    return set_active(email, False)


@bp.post("/users/<email:email>/activate")
def activate(email: str) -> Response:
    """Activate an account."""
    return set_active(email, True)


@bp.delete("/users/<email:email>/sessions")
def end_sessions(email: str) -> Response:
    """End every session of an account: each of its devices must log in again."""
    found = find_user(email)
    if request.get_data(cache=True):
        body({})  # nothing to send; a field here is a client mistake worth reporting
    ended = accounts.end_sessions_of(
        found.id, found.email, actor=actor(), source=SOURCE, action="session.end_all"
    )
    return ok({"email": found.email, "ended": ended})
