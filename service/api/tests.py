"""Policy tests: promises about single requests that every policy change must keep.

Thin over service.policy_tests, the one layer the editor, the API and the CLI share: this
module parses requests and shapes answers. Every item of a listing is the test with its
result on the current policy (``Result.as_dict``: passed, the deciding rule, the
explanation). Adding a test the policy does not keep is refused (409, reason
``policy-tests``); no override exists here: only the command line can force one past.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from flask import Response
from flask import request
from flask import url_for

from authz import PolicyFileError
from authz import RuleError
from authz.expectations import Expectation
from authz.expectations import parse as parse_file
from service import params
from service import policy_tests
from service.api import schemas
from service.api.policy import who
from service.api.views import Problem
from service.api.views import body
from service.api.views import bp
from service.api.views import dry_run
from service.api.views import ok
from service.api.views import with_dry_run
from service.users import engine

#: The body of a new policy test.
TEST_FIELDS = {
    "subject": schemas.Field(str),
    "method": schemas.Field(str),
    "path": schemas.Field(str),
    "outcome": schemas.Field(str),
    "note": schemas.Field(str, required=False),
}
#: Values that pass every check, to check one field of a bad body at a time.
_VALID = {"subject": "anonymous", "method": "GET", "path": "/", "outcome": "allow", "note": ""}
#: The media type of a file of policy tests, sent to /load and answered by /export.
CSV = "text/csv"
#: The name a downloaded export is saved under.
EXPORT_NAME = "policy-tests.csv"


def read_test(data: Mapping[str, Any]) -> Expectation:
    """The policy test a body describes; Invalid names every bad field at once."""
    values = {name: data.get(name, "") for name in _VALID}
    errors: dict[str, str] = {}
    for name in _VALID:
        try:
            policy_tests.parse(**{**_VALID, name: values[name]})
        except RuleError as e:
            errors.setdefault(e.field or name, e.message)
    # A path with surrounding spaces is a real request path, but a file of tests trims
    # its values: such a test would export as another one than it is.
    if "path" not in errors and values["path"] != values["path"].strip():
        errors["path"] = "must not start or end with spaces"
    if errors:
        raise schemas.Invalid([schemas.FieldError(f, m) for f, m in errors.items()])
    return policy_tests.parse(**values)  # each value passed alone: together too


def result_item(item: Expectation) -> dict[str, object]:
    """A test with its result on the current policy."""
    return policy_tests.run(items=[item])[0].as_dict()


def dry_answer(added: Sequence[Expectation], removed: Sequence[Expectation]) -> Response:
    """The answer to a dry run of a test write: what it would add and remove, and the new
    tests the current policy does not keep (any one refuses the write)."""
    failing = policy_tests.failing(added)
    refused = f"the policy does not keep {len(failing)} of these policy tests" if failing else None
    return ok(
        {
            "dry_run": True,
            "accepted": not failing,
            "revision": engine().revision,
            "added": [e.as_dict() for e in added],
            "removed": [e.as_dict() for e in removed],
            "tests": [r.as_dict() for r in failing],
            "refused": refused,
        }
    )


def test_url(test_id: str) -> str:
    return url_for("api.policy_test", test_id=test_id)


# -- the collection ---------------------------------------------------------------------


@bp.get("/policy/tests")
def policy_tests_list() -> Response:
    """List policy tests with their results, filtered by text and by failing ones."""
    page, per_page = schemas.paging(request.args)
    q = params.text(request.args.get("q"), "q") or ""
    failing = schemas.flag(request.args, "failing")
    listing = policy_tests.listing(q=q, failing=failing, page=page, per_page=per_page)
    return ok(
        {
            "revision": engine().revision,
            "total": listing.total,
            "page": listing.page,
            "per_page": listing.per_page,
            "failing": listing.failing,
            "bad": listing.bad,
            "items": [r.as_dict() for r in listing.results],
        }
    )


def _stored_already(item: Expectation) -> Problem:
    return Problem(
        409,
        "Conflict",
        f"the policy test [{item}] is stored already",
        reason="duplicate",
        existing=item.as_dict(),
    )


@bp.post("/policy/tests")
@with_dry_run
def policy_test_add() -> Response:
    """Add a policy test; 409 when the policy does not keep it, or has it already.

    One for a request that has a test already replaces that one (``replaced``).
    """
    item = read_test(body(TEST_FIELDS))
    writer = who()
    added, removed = policy_tests.plan([item])
    if not added:
        raise _stored_already(item)
    if dry_run():
        return dry_answer(added, removed)
    if not policy_tests.add(item, writer):  # stored meanwhile by another request
        raise _stored_already(item)
    response = ok(
        {
            "revision": engine().revision,
            "test": result_item(item),
            "replaced": removed[0].as_dict() if removed else None,
        },
        201,
    )
    response.headers["Location"] = test_url(item.id)
    return response


# -- one test ---------------------------------------------------------------------------


@bp.get("/policy/tests/<rule_id:test_id>")
def policy_test(test_id: str) -> Response:
    """Return one policy test with its result on the current policy."""
    return ok({"revision": engine().revision, "test": result_item(policy_tests.find(test_id))})


@bp.delete("/policy/tests/<rule_id:test_id>")
@with_dry_run
def policy_test_remove(test_id: str) -> Response:
    """Remove a policy test (never refused by the policy: it only drops a promise)."""
    if request.get_data(cache=True):
        body({})  # nothing to send; a field here is a client mistake worth reporting
    writer = who()
    if dry_run():
        return dry_answer([], [policy_tests.find(test_id)])
    removed = policy_tests.remove(test_id, writer)
    return ok({"revision": engine().revision, "removed": removed.as_dict()})


# -- files ------------------------------------------------------------------------------


@bp.get("/policy/tests/export")
def policy_tests_export() -> Response:
    """The stored policy tests as a CSV file, which /load reads back to the same tests."""
    response = Response(policy_tests.export(), mimetype=CSV)
    response.headers["Content-Disposition"] = f'attachment; filename="{EXPORT_NAME}"'
    return response


def read_csv() -> list[Expectation]:
    """The policy tests of the request's CSV body (PolicyFileError lists every bad line)."""
    if request.mimetype != CSV:
        raise Problem(
            415, "Unsupported media type", f"send the file as {CSV} (as /export gives it)"
        )
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyFileError([], message=f"not UTF-8 text: {e}") from None
    found = parse_file(text)
    return list(found.expectations)


@bp.post("/policy/tests/load")
@with_dry_run
def policy_tests_load() -> Response:
    """Store a file's policy tests in one audited write (``?replace=1``: and remove the
    stored ones it does not hold); refused, all of it, when the policy does not keep one.

    Replacing with a file that holds no test removes every promise, so it takes
    ``?allow_empty=1``: a truncated upload must not quietly do it.
    """
    replace = schemas.flag(request.args, "replace")
    allow_empty = schemas.flag(request.args, "allow_empty")
    items = read_csv()
    writer = who()
    try:
        planned = policy_tests.plan(items, replace=replace, allow_empty=allow_empty)
    except policy_tests.EmptyReplace:
        raise schemas.Invalid(
            [schemas.FieldError(None, "the file holds no policy test")],
            "replacing with an empty file removes every policy test: add ?allow_empty=1",
        ) from None
    if dry_run():
        return dry_answer(*planned)
    added, removed = policy_tests.load(items, writer, replace=replace, allow_empty=allow_empty)
    return ok(
        {
            "revision": engine().revision,
            "added": [e.as_dict() for e in added],
            "removed": [e.as_dict() for e in removed],
        }
    )
