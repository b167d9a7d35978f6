"""The /api/v1 blueprint: what every resource shares, and the one place errors become JSON.

Access is decided by policy rows in the app-wide middleware, never here. Writes go
through the engine's one write path with the logged-in account as the actor and
``api`` as the source; each names the policy revision it was based on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint
from flask import Response
from flask import g
from flask import jsonify
from flask import request
from flask_login import current_user
from flask_wtf.csrf import generate_csrf

from authz import Applied
from authz import AuthzError
from authz import Change
from authz import EngineUnavailable
from authz import LockoutRefused
from authz import NotFound
from authz import Rule
from authz import RuleError
from authz import StaleRevision
from authz.snapshot import Snapshot
from service import params
from service import users as accounts
from service.api import schemas
from service.responses import problem
from service.responses import unavailable

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: The audit source of every change made through this API.
SOURCE = "api"
#: Model field names as the API names them; other models' fields keep their own names.
FIELD_NAMES = {"sub": "subject", "obj": "path", "act": "methods", "eft": "effect"}
#: What the API calls each row type, in messages.
KINDS = {"p": "rule", "g": "role assignment"}


class Problem(Exception):
    """An outcome a view answers with a problem document (404, 409, ...)."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def actor() -> str:
    """Return the audit actor of a write: the logged-in account's email."""
    token = g.get("authz_token")
    if token is not None:
        return str(token.subject)  # a service token writes as token:NAME
    user = current_user._get_current_object()
    # The policy decides who may write; this only makes sure somebody is named. A
    # deployment that granted visitors API writes would otherwise get unattributed changes.
    if user is None or not user.is_authenticated:
        raise Problem(
            401, "Unauthorized", "changes are made by a logged-in account, which the audit names"
        )
    return str(user.email)


def body(fields: dict[str, schemas.Field]) -> dict[str, Any]:
    """Return the request's JSON object, checked against ``fields``."""
    return schemas.read_object(request.get_json(silent=True), fields)


def write_revision() -> int:
    """Return the revision a body-less write (DELETE) was based on: query or JSON body."""
    if request.get_data(cache=True):
        if "revision" in request.args:
            raise schemas.Invalid(
                [schemas.FieldError("revision", "give it in the query or in the body, not both")]
            )
        data = body({"revision": schemas.Field(int)})
        return schemas.revision(data["revision"])
    return schemas.revision(request.args.get("revision"))


def snapshot_at(expected: int) -> Snapshot:
    """Return the snapshot of the revision the client edited; StaleRevision when it is not current.

    Checks made against this snapshot (does the row exist, is it a duplicate) hold for
    the write too: the engine refuses it unless the stored revision is still ``expected``.
    """
    policy = accounts.engine()
    snapshot = policy.snapshot
    if snapshot.revision != expected:
        policy.refresh()  # another instance may have written since this one last looked
        snapshot = policy.snapshot
        if snapshot.revision != expected:
            raise StaleRevision(expected, snapshot.revision)
    return snapshot


def find(snapshot: Snapshot, ptype: str, rule_id: str) -> Rule:
    """Return the ``ptype`` row with this id, or a 404 problem."""
    rule = snapshot.find(rule_id)
    if rule is None or rule.ptype != ptype:
        raise Problem(404, "Not found", f"no {KINDS[ptype]} with id {rule_id!r}")
    return rule


def apply(change: Change, *, action: str, expected: int, detail: str = "") -> Applied:
    """Apply a change as the logged-in account, refused unless still at ``expected``."""
    return accounts.engine().apply(
        change,
        actor=actor(),
        source=SOURCE,
        action=action,
        detail=detail,
        strict=True,
        expected_revision=expected,
    )


def page_of(items: Sequence[Any], page: int, per_page: int) -> dict[str, Any]:
    """Return the paging fields of a list response and the page's items."""
    start = (page - 1) * per_page
    return {
        "total": len(items),
        "page": page,
        "per_page": per_page,
        "items": list(items[start : start + per_page]),
    }


def ok(payload: dict[str, Any], status: int = 200) -> Response:
    """Return a JSON response."""
    response = jsonify(payload)
    response.status_code = status
    return response


@bp.get("/csrf")
def csrf() -> Response:
    """Return the CSRF token that session callers send in ``X-CSRFToken`` on writes."""
    return ok({"csrf_token": generate_csrf()})


# -- errors: every one a problem document -------------------------------------------------


def api_field(name: str | None) -> str | None:
    """Return the API name of a model field (``sub`` -> ``subject``)."""
    return FIELD_NAMES.get(name, name) if name else None


@bp.errorhandler(schemas.Invalid)
def invalid(e: schemas.Invalid) -> Response:
    return problem(400, "Invalid request", e.detail, errors=[f.as_dict() for f in e.errors])


@bp.errorhandler(RuleError)
def invalid_rule(e: RuleError) -> Response:
    field = api_field(e.field)
    error = schemas.FieldError(field, e.message)
    detail = f"{field}: {e.message}" if field else e.message
    return problem(400, "Invalid request", detail, errors=[error.as_dict()])


@bp.errorhandler(accounts.AccountError)
def invalid_account(e: accounts.AccountError) -> Response:
    error = schemas.FieldError(e.field, e.message)
    return problem(400, "Invalid request", e.message, errors=[error.as_dict()])


@bp.errorhandler(StaleRevision)
def stale(e: StaleRevision) -> Response:
    return problem(
        409, "Stale revision", str(e), reason="stale-revision", current_revision=e.current
    )


@bp.errorhandler(LockoutRefused)
def lockout(e: LockoutRefused) -> Response:
    return problem(409, "Refused by the lockout guard", str(e), reason="lockout")


@bp.errorhandler(NotFound)
def not_found(e: NotFound) -> Response:
    return problem(404, "Not found", str(e))


@bp.errorhandler(Problem)
def api_problem(e: Problem) -> Response:
    return problem(e.status, e.title, e.detail, **e.extra)


@bp.errorhandler(params.BadParam)
def bad_param(e: params.BadParam) -> Response:
    error = schemas.FieldError(e.field, e.message)
    return problem(400, "Invalid request", str(e), errors=[error.as_dict()])


@bp.errorhandler(AuthzError)
def authz_error(e: AuthzError) -> Response:
    """Any other engine error: the engine refused the input (400), or cannot decide (503).

    Flask looks for a blueprint handler along the whole class hierarchy before the app's
    handlers, so this one must pass EngineUnavailable on to the app's 503 itself.
    """
    if isinstance(e, EngineUnavailable):
        return unavailable(str(e))
    return problem(400, "Invalid request", str(e))
