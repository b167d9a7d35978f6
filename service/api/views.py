"""The /api/v1 blueprint: what every resource shares, and the one place errors become JSON.

Access is decided by policy rows in the app-wide middleware, never here. Writes go
through the engine's one write path with the logged-in account as the actor and
``api`` as the source; each names the policy revision it was based on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

from flask import Blueprint
from flask import Response
from flask import g
from flask import jsonify
from flask import request
from flask_login import current_user
from flask_wtf.csrf import generate_csrf

from authz import AuthzError
from authz import Change
from authz import EngineUnavailable
from authz import PolicyFileError
from authz import Rule
from authz import RuleError
from authz import StaleRevision
from authz.expectations import ExpectationsBroken
from authz.whatif import WhatIf
from service import editing
from service import params
from service import policy_tests
from service import users as accounts
from service.api import schemas
from service.responses import problem
from service.responses import unavailable

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: The audit source of every change made through this API.
SOURCE = "api"
#: Model field names as the API names them; other models' fields keep their own names.
FIELD_NAMES = {"sub": "subject", "obj": "path", "act": "methods", "eft": "effect"}
#: Broken policy tests a refusal lists; beyond these they are counted (``more_tests``).
MAX_LISTED_TESTS = 200


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


def write_revision() -> int | None:
    """The revision a body-less write (DELETE) read its row at, from the query or a JSON
    body; optional: it lets a conflict name what the row became."""
    if request.get_data(cache=True):
        if "revision" in request.args:
            raise schemas.Invalid(
                [schemas.FieldError("revision", "give it in the query or in the body, not both")]
            )
        data = body({"revision": schemas.Field(int, required=False)})
        value = data.get("revision")
        return None if value is None else schemas.revision(value)
    if request.args.get("revision") in (None, ""):
        return None
    return schemas.revision(request.args.get("revision"))


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


# -- dry runs: ?dry_run=1 on every policy write ----------------------------------------


#: Endpoints of the writes that take ``?dry_run=1`` (marked by :func:`with_dry_run`).
DRY_RUNS: set[str] = set()
_View = TypeVar("_View", bound=Callable[..., Any])


def with_dry_run(view: _View) -> _View:
    """Mark a write view that answers ``?dry_run=1`` (it calls :func:`dry_run`)."""
    DRY_RUNS.add(f"{bp.name}.{view.__name__}")
    return view


def _dry_run_names() -> list[str]:
    """The query parameters that ask for a dry run, in any spelling (DRY_RUN, dry-run)."""
    return [name for name in request.args if re.sub(r"[^a-z]", "", name.lower()) == "dryrun"]


@bp.before_request
def no_dry_run_is_a_write() -> None:
    """A write asked for a dry run it has none of is refused, never made (an account's
    deactivation with ``?dry_run=1`` would otherwise deactivate it)."""
    if request.method in ("GET", "HEAD", "OPTIONS") or request.endpoint in DRY_RUNS:
        return
    asked = _dry_run_names()
    if asked:
        raise schemas.Invalid(
            [schemas.FieldError(asked[0], "this write has no dry run; nothing was written")]
        )


def dry_run() -> bool:
    """Whether the request asks for a dry run (``?dry_run=1``): plan it, write nothing.

    The middleware has already authorized it as the write it stands for (same method,
    same path): no one may plan a change they may not make.
    """
    # A misspelt name would be ignored like any unknown parameter, and the write made:
    # DRY_RUN, dry-run or dryRun is refused instead; so is a bare ``?dry_run``, which
    # asks for one without saying yes or no.
    for name in _dry_run_names():
        if name != "dry_run":
            raise schemas.Invalid([schemas.FieldError(name, "write it as dry_run")])
        if "" in request.args.getlist(name):
            raise schemas.Invalid([schemas.FieldError(name, "must be 1 or 0")])
    return schemas.flag(request.args, "dry_run")


def what_if_answer(result: WhatIf, *, accepted: bool | None = None) -> Response:
    """The answer to a dry run: whether the write would be accepted, and its effect.

    :param accepted: overrides "not refused" where the write itself goes past a refusal
        (a revoked token's own policy tests).
    """
    return ok(
        {
            "dry_run": True,
            "accepted": result.refused is None if accepted is None else accepted,
            "revision": accounts.engine().revision,
            "what_if": result.as_dict(),
        }
    )


def planned(change: Change, *, strict: bool) -> Response:
    """Answer a dry run of a policy change: its what-if, computed on the stored policy."""
    return what_if_answer(policy_tests.what_if(change, strict=strict))


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


def _rule_json(rule: Rule) -> dict[str, Any]:
    from service.api.policy import link_item
    from service.api.policy import rule_item
    from service.api.policy import rule_names

    return rule_item(rule, rule_names()) if rule.ptype == "p" else link_item(rule)


def _extras(e: Exception) -> dict[str, Any]:
    """What a client needs beside the status to act on an outcome."""
    if isinstance(e, editing.Duplicate):
        return {"existing": _rule_json(e.rule)}
    if isinstance(e, editing.Conflict):
        return {
            "current": _rule_json(e.current) if e.current is not None else None,
            "yours": _rule_json(e.yours) if e.yours is not None else None,
            "changed_by": e.entry.actor if e.entry is not None else None,
            "changed_at_revision": e.entry.revision if e.entry is not None else None,
        }
    if isinstance(e, RuleError):
        field = api_field(e.field)
        return {"errors": [schemas.FieldError(field, e.message).as_dict()]}
    if isinstance(e, accounts.AccountError | params.BadParam | editing.EditError) and getattr(
        e, "field", None
    ):
        return {"errors": [schemas.FieldError(e.field, e.message).as_dict()]}
    if isinstance(e, params.Invalid):
        return {"errors": [schemas.FieldError(b.field, b.message).as_dict() for b in e.errors]}
    if isinstance(e, StaleRevision):
        return {"current_revision": e.current}
    if isinstance(e, ExpectationsBroken):
        # Each broken test with the rule that now decides it: what to fix, or whom to ask.
        shown = e.results[:MAX_LISTED_TESTS]
        return {
            "tests": [r.as_dict() for r in shown],
            "more_tests": len(e.results) - len(shown),
        }
    if isinstance(e, PolicyFileError):
        errors = [
            schemas.FieldError(
                api_field(error.field),
                f"line {error.line}: {error.message}" if error.line else error.message,
            ).as_dict()
            for error in e.errors
            if isinstance(error, RuleError)
        ]
        return {"errors": errors, "more_errors": e.more}
    return {}


@bp.errorhandler(Problem)
def api_problem(e: Problem) -> Response:
    return problem(e.status, e.title, e.detail, **e.extra)


@bp.errorhandler(params.BadParam)
@bp.errorhandler(params.Invalid)
@bp.errorhandler(accounts.AccountError)
@bp.errorhandler(editing.EditError)
@bp.errorhandler(AuthzError)
def outcome(e: Exception) -> Response:
    """Every other outcome, as the one table in service.editing says (problem+json).

    Flask looks for a blueprint handler along the whole class hierarchy before the app's
    handlers, so this one must pass EngineUnavailable on to the app's 503 itself.
    """
    if isinstance(e, EngineUnavailable):
        return unavailable(str(e))
    status, title, reason = editing.http_outcome(e)
    detail = str(e)
    if isinstance(e, RuleError) and e.field:
        detail = f"{api_field(e.field)}: {e.message}"
    extra: dict[str, Any] = {} if reason == "invalid" else {"reason": reason}
    return problem(status, title, detail, **extra, **_extras(e))
