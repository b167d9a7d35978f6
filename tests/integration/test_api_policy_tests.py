"""Policy tests through the JSON API: the resource, the gate on every policy write, and
``?dry_run=1``, on a real database (each backend of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authz import Rule
from authz.expectations import Expectation
from authz.expectations import expectation
from service import tokens
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import bearer
from tests.conftest import csrf_token
from tests.conftest import make_token
from tests.conftest import store_tests as store
from tests.conftest import stored_tests as stored
from tests.integration.test_api import API
from tests.integration.test_api import Api
from tests.integration.test_api import audit_log
from tests.integration.test_api import engine_of
from tests.integration.test_api import error_fields
from tests.integration.test_api import is_problem
from tests.integration.test_api import unchanged

TESTS = "/policy/tests"
HOME = Rule.of("p", "user", "/", "GET", "allow")
USER_LINK = Rule.of("g", USER, "user")

#: Promises the default policy keeps.
KEPT = [
    expectation("anonymous", "GET", "/admin/", "deny", "visitors never open the editor"),
    expectation("user", "GET", "/", "allow"),
    expectation("admin", "GET", "/admin/", "allow"),
]


@pytest.fixture
def api(client: FlaskClient, auth: AuthActions) -> Api:
    """The API as the admin."""
    auth.login(ADMIN, ADMIN_PASSWORD)
    return Api(client)


def url(path: str, **query: str) -> str:
    """``path`` with a query string."""
    if not query:
        return path
    return path + "?" + "&".join(f"{k}={v}" for k, v in query.items())


# -- every policy write is gated: 409 naming the test and the rule, nothing written -------

Body = Callable[[Flask], dict[str, Any] | None]


def _revision(app: Flask) -> dict[str, Any]:
    return {"revision": engine_of(app).revision}


#: (name, method, path, body, the test it breaks, the rule that decides it after, or None)
REFUSED: list[tuple[str, str, str, Body, Expectation, list[str] | None]] = [
    (
        "rule add",
        "POST",
        "/policy/rules",
        lambda app: {"subject": "anonymous", "path": "/admin/*", "methods": "GET"},
        KEPT[0],
        ["p", "anonymous", "/admin/*", "GET", "allow"],
    ),
    (
        "rule replace",
        "PUT",
        f"/policy/rules/{HOME.id}",
        lambda app: {"subject": "user", "path": "/metrics", "methods": "GET"},
        expectation("user", "GET", "/metrics", "deny", "metrics are for admins"),
        ["p", "user", "/metrics", "GET", "allow"],
    ),
    ("rule remove", "DELETE", f"/policy/rules/{HOME.id}", _revision, KEPT[1], None),
    (
        "role link add",
        "POST",
        "/policy/roles",
        lambda app: {"member": USER, "role": "admin"},
        expectation(USER, "GET", "/admin/", "deny", "a plain user never edits"),
        ["p", "admin", "/admin/*", ".*", "allow"],
    ),
    (
        "role link remove",
        "DELETE",
        f"/policy/roles/{USER_LINK.id}",
        _revision,
        expectation(USER, "GET", "/", "allow"),
        None,
    ),
    (
        "token creation",
        "POST",
        "/tokens",
        lambda app: {"name": "ci", "roles": ["admin"]},
        expectation("token:ci", "GET", "/api/v1/users", "deny", "no token lists accounts"),
        ["p", "admin", "/api/v1/*", ".*", "allow"],
    ),
]
REFUSED_IDS = [r[0] for r in REFUSED]


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "test", "rule"), REFUSED, ids=REFUSED_IDS
)
def test_a_write_that_breaks_a_policy_test_is_refused_and_writes_nothing(
    app: Flask,
    api: Api,
    name: str,
    method: str,
    path: str,
    body: Body,
    test: Expectation,
    rule: list[str] | None,
) -> None:
    store(app, test)
    with unchanged(app):
        problem = is_problem(api.send(method, path, body(app)), 409)
    assert problem["reason"] == "policy-tests"
    assert problem["title"] == "Refused by policy tests"
    assert str(test) in problem["detail"]
    (broken,) = problem["tests"]
    assert broken["expectation"] == test.as_dict()
    assert broken["passed"] is False
    assert broken["rule"] == rule
    if rule is not None:
        assert f"[{', '.join(rule)}]" in broken["explain"]
        assert f"[{', '.join(rule)}]" in problem["detail"]
    else:
        assert broken["explain"] == "denied: no rule matches"
    assert problem["more_tests"] == 0
    with app.app_context():
        assert tokens.get("ci") is None  # the token creation's account row went too


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "test", "rule"), REFUSED, ids=REFUSED_IDS
)
def test_the_same_write_as_a_dry_run_answers_not_accepted_with_the_flip(
    app: Flask,
    api: Api,
    name: str,
    method: str,
    path: str,
    body: Body,
    test: Expectation,
    rule: list[str] | None,
) -> None:
    store(app, test)
    with unchanged(app):
        response = api.send(method, url(path, dry_run="1"), body(app))
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.json
    assert answer["dry_run"] is True and answer["accepted"] is False
    assert answer["revision"] == engine_of(app).revision
    what_if = answer["what_if"]
    assert what_if["refused"] and str(test) in what_if["refused"]
    (flip,) = what_if["tests"]
    assert flip["expectation"] == test.as_dict()
    assert flip["change"] == "breaks"
    assert flip["rule"] == rule
    assert flip["text"].startswith(f"breaks: {test}")
    assert "secret" not in answer
    with app.app_context():
        assert tokens.get("ci") is None


def test_many_broken_tests_are_listed_up_to_a_bound_and_counted_beyond(
    app: Flask, api: Api
) -> None:
    api.post("/policy/rules", {"subject": "user", "path": "/t/*", "methods": "GET"})
    store(app, *(expectation("user", "GET", f"/t/{i}", "allow") for i in range(250)))
    rule = Rule.of("p", "user", "/t/*", "GET", "allow")
    with unchanged(app):
        problem = is_problem(api.delete(f"/policy/rules/{rule.id}"), 409)
    assert len(problem["tests"]) == 200
    assert problem["more_tests"] == 50
    assert "and 245 more" in problem["detail"]


def test_a_forced_past_failing_test_does_not_hold_up_unrelated_writes(app: Flask, api: Api) -> None:
    store(app, expectation("anonymous", "GET", "/metrics", "allow"), force=True)
    response = api.post("/policy/rules", {"subject": "user", "path": "/r", "methods": "GET"})
    assert response.status_code == 201, response.get_data(as_text=True)


# -- dry runs of permitted changes ----------------------------------------------------------


def test_a_permitted_rule_add_dry_run_lists_who_gains_and_writes_nothing(
    app: Flask, api: Api
) -> None:
    store(app, *KEPT)
    body = {"subject": "user", "path": "/reports/:id", "methods": "POST"}
    with unchanged(app):
        response = api.post(url("/policy/rules", dry_run="1"), body)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.json
    assert answer["accepted"] is True
    what_if = answer["what_if"]
    assert what_if["refused"] is None and what_if["tests"] == []
    assert what_if["added"] == [["p", "user", "/reports/:id", "POST", "allow"]]
    lines = [line["text"] for line in what_if["access"]]
    assert "+ user may now POST /reports/:id" in lines
    assert "+ admin may now POST /reports/:id" in lines  # admin inherits user
    assert not any(line.startswith("-") for line in lines)
    # The real write then answers as before.
    assert api.post("/policy/rules", body).status_code == 201


def test_a_role_link_removal_dry_run_names_the_user_who_loses(app: Flask, api: Api) -> None:
    with unchanged(app):
        response = api.delete(url(f"/policy/roles/{USER_LINK.id}", dry_run="1"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["accepted"] is True
    lines = [line["text"] for line in response.json["what_if"]["access"]]
    assert f"- {USER} may no longer GET /" in lines


def test_a_rule_replace_and_remove_dry_run_list_both_directions(app: Flask, api: Api) -> None:
    body = {"subject": "user", "path": "/", "methods": "GET|POST"}
    with unchanged(app):
        replaced = api.put(url(f"/policy/rules/{HOME.id}", dry_run="1"), body)
        removed = api.delete(url(f"/policy/rules/{HOME.id}", dry_run="true"))
    assert replaced.status_code == 200 and replaced.json["accepted"] is True
    assert "+ user may now POST /" in [a["text"] for a in replaced.json["what_if"]["access"]]
    assert removed.status_code == 200 and removed.json["accepted"] is True
    assert "- user may no longer GET /" in [a["text"] for a in removed.json["what_if"]["access"]]


def test_a_token_creation_dry_run_creates_no_token_and_shows_no_secret(
    app: Flask, api: Api
) -> None:
    with unchanged(app):
        response = api.post(url("/tokens", dry_run="1"), {"name": "ci", "roles": ["admin"]})
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.json
    assert answer["accepted"] is True and "secret" not in answer and "token" not in answer
    assert answer["what_if"]["added"] == [["g", "token:ci", "admin"]]
    assert "+ token:ci may now GET /admin/*" in [a["text"] for a in answer["what_if"]["access"]]
    with app.app_context():
        assert tokens.get("ci") is None
    # Refused before planning as the creation itself would be.
    for bad in (
        {"name": "CI"},
        {"name": "ci", "roles": ["nope"]},
        {"name": "ci", "expires_days": 0},
    ):
        with unchanged(app):
            is_problem(api.post(url("/tokens", dry_run="1"), bad), 400)


def test_a_token_revocation_dry_run_goes_past_the_tokens_own_tests_as_the_revoke_does(
    app: Flask, api: Api
) -> None:
    make_token(app, "ci", roles=["admin"])
    own = expectation("token:ci", "GET", "/api/v1/users", "allow")
    store(app, own)
    with unchanged(app):
        response = api.delete(url("/tokens/ci", dry_run="1"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["accepted"] is True
    (flip,) = response.json["what_if"]["tests"]
    assert flip["expectation"] == own.as_dict() and flip["change"] == "breaks"
    with app.app_context():
        assert tokens.get("ci").revoked_at is None  # type: ignore[union-attr]
    assert api.delete("/tokens/ci").status_code == 200
    assert audit_log(app)[0].forced


def test_a_dry_run_refuses_what_the_write_refuses(app: Flask, api: Api) -> None:
    """A duplicate, an unknown row, a bad value: the same answers as the write."""
    with unchanged(app):
        dup = api.post(
            url("/policy/rules", dry_run="1"), {"subject": "user", "path": "/", "methods": "GET"}
        )
        assert is_problem(dup, 409)["reason"] == "duplicate"
        is_problem(api.delete(url("/policy/rules/0123456789abcdef", dry_run="1")), 404)
        bad = api.post(
            url("/policy/rules", dry_run="1"), {"subject": "User", "path": "/", "methods": "GET"}
        )
        assert "subject" in error_fields(bad)
        link = api.post(url("/policy/roles", dry_run="1"), {"member": USER, "role": "user"})
        assert is_problem(link, 409)["reason"] == "duplicate"


@pytest.mark.parametrize(
    "query",
    ["dry_run=yes", "dry_run=2", "dry_run=1&dry_run=0", "dry_run=0&dry_run=1", "dry_run=%201"],
)
def test_a_misspelt_dry_run_is_refused_and_never_writes(app: Flask, api: Api, query: str) -> None:
    with unchanged(app):
        response = api.post(
            f"/policy/rules?{query}", {"subject": "user", "path": "/x", "methods": "GET"}
        )
        assert error_fields(response) == ["dry_run"]


@pytest.mark.parametrize(
    "name", ["DRY_RUN", "dry-run", "dryRun", "dryrun", "Dry_Run", "dry_run%20"]
)
def test_a_misspelt_dry_run_name_is_refused_rather_than_ignored(
    app: Flask, api: Api, name: str
) -> None:
    """Unknown parameters are ignored elsewhere; this one would turn a dry run into a write."""
    with unchanged(app):
        response = api.post(
            f"/policy/rules?{name}=1", {"subject": "user", "path": "/x", "methods": "GET"}
        )
        problem = is_problem(response, 400)
    assert "dry_run" in problem["errors"][0]["message"]


def test_a_dry_run_field_in_the_body_is_refused(app: Flask, api: Api) -> None:
    with unchanged(app):
        body = {"subject": "user", "path": "/x", "methods": "GET", "dry_run": True}
        assert error_fields(api.post("/policy/rules", body)) == ["dry_run"]


def test_dry_run_zero_is_the_write(app: Flask, api: Api) -> None:
    response = api.post(
        "/policy/rules?dry_run=0", {"subject": "user", "path": "/x", "methods": "GET"}
    )
    assert response.status_code == 201


def test_a_dry_run_is_authorized_and_csrf_checked_like_the_write(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    body = {"subject": "anonymous", "path": "/admin/*", "methods": "GET"}
    path = f"{API}/policy/rules?dry_run=1"
    with unchanged(app):
        assert is_problem(client.post(path, json=body), 401)
        auth.login()  # the plain user
        token = csrf_token(client, "/logout")
        assert is_problem(client.post(path, json=body, headers={"X-CSRFToken": token}), 403)
        auth.logout()
        auth.login(ADMIN, ADMIN_PASSWORD)
        refused = is_problem(client.post(path, json=body), 400)  # no CSRF token
        assert "CSRF" in refused["detail"]


#: Every policy write of the API, with a body it accepts: a dry run of each is authorized
#: and CSRF-checked as the write is.
DRY_RUNS = [(method, path, body) for _name, method, path, body, _test, _rule in REFUSED] + [
    ("DELETE", "/tokens/ops", lambda app: None)
]


@pytest.mark.parametrize(("method", "path", "body"), DRY_RUNS)
def test_every_dry_run_is_refused_to_whom_the_write_is(
    app: Flask, client: FlaskClient, auth: AuthActions, method: str, path: str, body: Body
) -> None:
    make_token(app, "ops", roles=["user"])
    target = f"{API}{path}?dry_run=1"
    with unchanged(app):
        is_problem(client.open(target, method=method, json=body(app)), 401)
        auth.login()
        token = csrf_token(client, "/logout")
        forbidden = client.open(
            target, method=method, json=body(app), headers={"X-CSRFToken": token}
        )
        is_problem(forbidden, 403)
        auth.logout()
        auth.login(ADMIN, ADMIN_PASSWORD)
        assert (
            "CSRF" in is_problem(client.open(target, method=method, json=body(app)), 400)["detail"]
        )
        allowed = Api(client).send(method, f"{path}?dry_run=1", body(app))
        assert allowed.status_code == 200, allowed.get_data(as_text=True)
        assert allowed.json["dry_run"] is True and allowed.json["accepted"] is True


def test_a_bearer_token_dry_runs_without_csrf(app: Flask) -> None:
    secret = make_token(app, "ops", roles=["admin"])
    client = app.test_client()
    with unchanged(app):
        response = client.post(
            f"{API}/policy/rules?dry_run=1",
            json={"subject": "user", "path": "/x", "methods": "GET"},
            headers=bearer(secret),
        )
    assert response.status_code == 200 and response.json["accepted"] is True


# -- the policy tests resource ------------------------------------------------------------

NEW = {"subject": "anonymous", "method": "GET", "path": "/metrics", "outcome": "deny"}


def test_add_look_up_list_and_remove_a_test(app: Flask, api: Api) -> None:
    entries = len(audit_log(app))
    revision = engine_of(app).revision
    added = api.post(TESTS, {**NEW, "note": "metrics are private"})
    assert added.status_code == 201, added.get_data(as_text=True)
    item = expectation(**NEW, note="metrics are private")
    assert added.headers["Location"].endswith(f"{API}{TESTS}/{item.id}")
    test = added.json["test"]
    assert test["expectation"] == item.as_dict()
    assert test["passed"] is True and test["allowed"] is False
    assert test["explain"] == "denied: no rule matches"
    assert added.json["replaced"] is None
    assert stored(app) == [item]
    (entry,) = audit_log(app)[: len(audit_log(app)) - entries]
    assert (entry.actor, entry.source, entry.action) == (ADMIN, "api", "test.add")
    assert engine_of(app).revision == revision  # a test is not a policy row

    one = api.get(f"{TESTS}/{item.id}")
    assert one.status_code == 200 and one.json["test"]["expectation"]["id"] == item.id
    listing = api.get(TESTS).json
    assert listing["total"] == 1 and listing["failing"] == 0 and listing["bad"] == []
    assert listing["items"][0]["expectation"] == item.as_dict()

    removed = api.delete(f"{TESTS}/{item.id}")
    assert removed.status_code == 200 and removed.json["removed"] == item.as_dict()
    assert stored(app) == []
    assert audit_log(app)[0].action == "test.remove"
    is_problem(api.get(f"{TESTS}/{item.id}"), 404)
    is_problem(api.delete(f"{TESTS}/{item.id}"), 404)


def test_adding_the_same_test_twice_is_a_conflict_and_a_new_note_replaces_it(
    app: Flask, api: Api
) -> None:
    assert api.post(TESTS, NEW).status_code == 201
    with unchanged(app):
        dup = is_problem(api.post(TESTS, NEW), 409)
    assert dup["reason"] == "duplicate" and dup["existing"]["path"] == "/metrics"
    again = api.post(TESTS, {**NEW, "note": "now with a reason"})
    assert again.status_code == 201
    assert again.json["replaced"] == expectation(**NEW).as_dict()
    assert [e.note for e in stored(app)] == ["now with a reason"]


def test_a_test_the_policy_does_not_keep_is_refused_naming_the_rule(app: Flask, api: Api) -> None:
    body = {"subject": "anonymous", "method": "GET", "path": "/login", "outcome": "deny"}
    with unchanged(app):
        problem = is_problem(api.post(TESTS, body), 409)
    assert problem["reason"] == "policy-tests"
    (result,) = problem["tests"]
    assert result["expectation"]["path"] == "/login"
    assert result["rule"] == ["p", "anonymous", "/login", "GET|POST", "allow"]
    assert stored(app) == []


def test_adding_a_test_as_a_dry_run_stores_nothing(app: Flask, api: Api) -> None:
    with unchanged(app):
        kept = api.post(url(TESTS, dry_run="1"), NEW)
        broken = api.post(url(TESTS, dry_run="1"), {**NEW, "path": "/login"})
    assert kept.status_code == 200 and kept.json["accepted"] is True
    assert kept.json["added"] == [expectation(**NEW).as_dict()] and kept.json["tests"] == []
    assert broken.json["accepted"] is False and broken.json["refused"]
    assert broken.json["tests"][0]["rule"] == ["p", "anonymous", "/login", "GET|POST", "allow"]
    assert stored(app) == []


def test_removing_a_test_as_a_dry_run_keeps_it(app: Flask, api: Api) -> None:
    store(app, KEPT[0])
    with unchanged(app):
        response = api.delete(url(f"{TESTS}/{KEPT[0].id}", dry_run="1"))
    assert response.json["accepted"] is True
    assert response.json["removed"] == [KEPT[0].as_dict()]
    assert stored(app) == [KEPT[0]]


#: (field, a bad value): every spelling the engine would not decide as written.
BAD_VALUES = [
    ("subject", "Anonymous"),
    ("subject", "USER@EXAMPLE.COM"),
    ("subject", "User@example.com"),
    ("subject", " user"),
    ("subject", ""),
    ("subject", "token:"),
    ("subject", "a" * 300),
    ("method", "get"),
    ("method", "Get"),
    ("method", "HEAD"),
    ("method", ""),
    ("method", "G ET"),
    ("method", "GET\n"),
    ("method", "X" * 40),
    ("path", "//admin/"),
    ("path", "/admin//"),
    ("path", "/a/../admin/"),
    ("path", "/a/./b"),
    ("path", "admin/"),
    ("path", ""),
    ("path", "/admin\\x"),
    ("path", "/admin/\x00"),
    ("path", "/admin/\t"),
    ("path", "/admin/ "),
    ("path", " /admin/"),
    ("path", "/\ud800"),
    ("path", "/" + "a" * 5000),
    # Not a path the router routes as written: a query, a fragment, a percent-escape.
    ("path", "/admin/?x=1"),
    ("path", "/admin/#top"),
    ("path", "/admin%2F"),
    ("path", "/%61dmin/"),
    ("outcome", "Allow"),
    ("outcome", "DENY"),
    ("outcome", "permit"),
    ("outcome", ""),
    ("note", "line\nbreak"),
    ("note", "carriage\rreturn"),
    ("note", "escape \x1b[31m"),
    ("note", "delete \x7f"),
    ("note", "nul \x00"),
    ("note", "n" * 501),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_every_bad_field_is_a_400_naming_it(app: Flask, api: Api, field: str, value: str) -> None:
    with unchanged(app):
        response = api.post(TESTS, {**NEW, field: value})
        assert error_fields(response) == [field]
        dry = api.post(url(TESTS, dry_run="1"), {**NEW, field: value})
        assert error_fields(dry) == [field]
    assert stored(app) == []


def test_every_bad_field_is_named_at_once(api: Api) -> None:
    body = {"subject": "Admin", "method": "head", "path": "//", "outcome": "yes", "note": "\x01"}
    assert sorted(error_fields(api.post(TESTS, body))) == sorted(body)


@pytest.mark.parametrize(
    "body",
    [
        {"method": "GET", "path": "/", "outcome": "allow"},
        {**NEW, "extra": "x"},
        {**NEW, "outcome": True},
        {**NEW, "note": 5},
        ["not", "an", "object"],
        None,
    ],
)
def test_a_malformed_body_is_a_400(app: Flask, api: Api, body: Any) -> None:
    with unchanged(app):
        if body is None:
            response = api.client.post(
                f"{API}{TESTS}",
                data="{",
                headers={"X-CSRFToken": api.token},
                content_type="application/json",
            )
        else:
            response = api.post(TESTS, body)
        is_problem(response, 400)
    assert stored(app) == []


@pytest.mark.parametrize("test_id", ["0123456789abcdef", "ffffffffffffffff"])
def test_an_unknown_id_is_404(api: Api, test_id: str) -> None:
    is_problem(api.get(f"{TESTS}/{test_id}"), 404)
    is_problem(api.delete(f"{TESTS}/{test_id}"), 404)
    is_problem(api.delete(url(f"{TESTS}/{test_id}", dry_run="1")), 404)


@pytest.mark.parametrize(
    "test_id", ["0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "x"]
)
def test_an_id_in_another_spelling_is_404(app: Flask, api: Api, test_id: str) -> None:
    store(app, KEPT[0])
    is_problem(api.get(f"{TESTS}/{test_id}"), 404)
    with unchanged(app):
        assert api.delete(f"{TESTS}/{test_id}").status_code in (404, 405)
    assert stored(app) == [KEPT[0]]


def test_a_delete_with_a_body_field_is_a_400(app: Flask, api: Api) -> None:
    store(app, KEPT[0])
    assert error_fields(api.delete(f"{TESTS}/{KEPT[0].id}", {"force": True})) == ["force"]
    assert stored(app) == [KEPT[0]]


def test_no_force_through_the_api(app: Flask, api: Api) -> None:
    """Only the command line overrides the policy tests: a force field or query is nothing."""
    store(app, KEPT[1])
    body = {"subject": "anonymous", "method": "GET", "path": "/login", "outcome": "deny"}
    with unchanged(app):
        assert error_fields(api.post(TESTS, {**body, "force": True})) == ["force"]
        is_problem(api.post(url(TESTS, force="1"), body), 409)
        is_problem(api.delete(url(f"/policy/rules/{HOME.id}", force="1")), 409)
        csv = "anonymous, GET, /login, deny\n"
        is_problem(
            api.post(url(f"{TESTS}/load", force="1"), data=csv, content_type="text/csv"), 409
        )


# -- listing ------------------------------------------------------------------------------


def test_the_listing_pages_filters_and_counts_failing_and_bad_rows(app: Flask, api: Api) -> None:
    store(app, *KEPT, expectation("anonymous", "GET", "/login", "allow", "Login page"))
    # A test forced past (the command line can), and a stored row edited by hand.
    store(app, expectation("anonymous", "GET", "/metrics", "allow"), force=True)
    engine = engine_of(app)
    with engine.store.transaction() as session:
        engine.store.insert_expectations(session, [("Nobody", "GET", "/", "allow", "")])

    listing = api.get(TESTS).json
    assert listing["total"] == 5 and listing["failing"] == 1
    assert len(listing["bad"]) == 1 and "Nobody" in listing["bad"][0]
    assert [i["passed"] for i in listing["items"]] == [True, True, True, True, False]

    page = api.get(url(TESTS, page="2", per_page="2")).json
    assert (page["page"], page["per_page"], page["total"]) == (2, 2, 5)
    assert [i["expectation"]["path"] for i in page["items"]] == ["/admin/", "/login"]
    assert api.get(url(TESTS, page="9")).json["items"] == []

    found = api.get(url(TESTS, q="LOGIN")).json
    assert [i["expectation"]["path"] for i in found["items"]] == ["/login"]
    failing = api.get(url(TESTS, failing="1")).json
    assert failing["total"] == 1
    (item,) = failing["items"]
    assert item["expectation"]["path"] == "/metrics"
    assert item["explain"] == "denied: no rule matches"
    assert api.get(url(TESTS, failing="0")).json["total"] == 5


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=x", "page"),
        ("per_page=0", "per_page"),
        ("per_page=100000", "per_page"),
        ("failing=yes", "failing"),
        ("failing=1&failing=1", "failing"),
        ("q=%00", "q"),
        ("q=" + "a" * 300, "q"),
    ],
)
def test_bad_listing_parameters_are_400(api: Api, query: str, field: str) -> None:
    assert error_fields(api.get(f"{TESTS}?{query}")) == [field]


# -- files --------------------------------------------------------------------------------

TRICKY = [
    expectation("anonymous", "GET", "/admin/", "deny", 'a "quoted", comma note'),
    expectation("user", "GET", "/", "allow", "# not a comment"),
    expectation("admin", "GET", "/admin/", "allow", "ünïcödé \u2028 separator"),
    expectation("anonymous", "GET", "/a,b", "deny"),
    expectation("anonymous", "GET", '/q"uote', "deny", " "),
]


def load(api: Api, text: str | bytes, **query: str) -> Any:
    return api.post(url(f"{TESTS}/load", **query), data=text, content_type="text/csv")


def test_export_then_load_gives_back_the_same_tests(app: Flask, api: Api) -> None:
    store(app, *TRICKY)
    before = stored(app)
    exported = api.get(f"{TESTS}/export")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    assert exported.headers["Content-Disposition"] == 'attachment; filename="policy-tests.csv"'
    text = exported.get_data(as_text=True)
    assert load(api, "user, GET, /, allow\n", replace="1").json["removed"]
    assert stored(app) == [expectation("user", "GET", "/", "allow")]
    response = load(api, text, replace="1")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert sorted(stored(app)) == sorted(before)
    assert audit_log(app)[0].action == "tests.load"


def test_load_merges_unless_told_to_replace(app: Flask, api: Api) -> None:
    store(app, KEPT[0])
    merged = load(api, "user, GET, /, allow\n")
    assert merged.status_code == 200
    assert merged.json["added"] == [KEPT[1].as_dict()] and merged.json["removed"] == []
    assert set(stored(app)) == {KEPT[0], KEPT[1]}
    replaced = load(api, "admin, GET, /admin/, allow\n", replace="1")
    assert {t["id"] for t in replaced.json["removed"]} == {KEPT[0].id, KEPT[1].id}
    assert stored(app) == [KEPT[2]]


def test_a_load_with_one_test_the_policy_does_not_keep_stores_none(app: Flask, api: Api) -> None:
    text = "user, GET, /, allow\nanonymous, GET, /admin/, allow, oops\n"
    with unchanged(app):
        problem = is_problem(load(api, text), 409)
    assert problem["reason"] == "policy-tests"
    (result,) = problem["tests"]
    assert result["expectation"]["note"] == "oops"
    assert stored(app) == []


def test_a_load_dry_run_says_what_it_would_do_and_stores_nothing(app: Flask, api: Api) -> None:
    store(app, KEPT[0])
    with unchanged(app):
        good = load(api, "user, GET, /, allow\n", replace="1", dry_run="1")
        bad = load(api, "anonymous, GET, /admin/, allow\n", dry_run="1")
    assert good.status_code == 200 and good.json["accepted"] is True
    assert good.json["added"] == [KEPT[1].as_dict()]
    assert good.json["removed"] == [KEPT[0].as_dict()]
    assert bad.json["accepted"] is False
    assert bad.json["removed"] == [KEPT[0].as_dict()]  # replaced by the other outcome
    assert bad.json["tests"][0]["explain"] == "denied: no rule matches"
    assert stored(app) == [KEPT[0]]


def test_a_bad_file_is_a_400_naming_every_bad_line(app: Flask, api: Api) -> None:
    text = (
        "# comment\n"
        "Anonymous, GET, /admin/, deny\n"
        "user, HEAD, /, allow\n"
        "user, GET, //x, allow\n"
        "user, GET, /, maybe\n"
        "user, GET\n"
        "user, GET, /, allow\n"
        "user, GET, /, allow\n"
    )
    with unchanged(app):
        problem = is_problem(load(api, text), 400)
    messages = [e["message"] for e in problem["errors"]]
    assert [m.split(":")[0] for m in messages] == [f"line {n}" for n in (2, 3, 4, 5, 6, 8)]
    assert [e["field"] for e in problem["errors"]][:4] == ["subject", "method", "path", "outcome"]
    assert stored(app) == []


def test_a_file_naming_a_path_the_router_does_not_route_as_written_is_refused(
    app: Flask, api: Api
) -> None:
    text = "user, GET, /, allow\nanonymous, GET, /admin/?x, deny\nanonymous, GET, /a%2Fb, deny\n"
    with unchanged(app):
        problem = is_problem(load(api, text), 400)
    assert [(e["field"], e["message"][:6]) for e in problem["errors"]] == [
        ("path", "line 2"),
        ("path", "line 3"),
    ]
    assert stored(app) == []


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        ("user, GET, /, allow\n", "application/json", 415),
        ("user, GET, /, allow\n", "text/plain", 415),
        ("user, GET, /, allow\n", "", 415),
        (b"user, GET, /, allow, \xff\xfe\n", "text/csv", 400),
        ("user, GET, /, allow, \x00\n", "text/csv", 400),
        ('user, GET, /, allow, "two\nlines"\n', "text/csv", 400),
    ],
)
def test_a_load_that_is_not_a_utf8_csv_file_is_refused(
    app: Flask, api: Api, data: str | bytes, content_type: str, status: int
) -> None:
    with unchanged(app):
        response = api.client.post(
            f"{API}{TESTS}/load",
            data=data,
            content_type=content_type,
            headers={"X-CSRFToken": api.token},
        )
        is_problem(response, status)
    assert stored(app) == []


def test_an_empty_file_replaces_every_test_only_when_asked(app: Flask, api: Api) -> None:
    store(app, *KEPT)
    with unchanged(app):
        refused = is_problem(load(api, "# nothing\n", replace="1"), 400)
    assert "allow_empty" in refused["detail"]
    assert len(stored(app)) == 3
    assert load(api, "", replace="1", allow_empty="1").status_code == 200
    assert stored(app) == []


def test_a_file_larger_than_the_body_limit_is_413(app: Flask, api: Api) -> None:
    line = "anonymous, GET, /admin/, deny, " + "n" * 400 + "\n"
    with unchanged(app):
        is_problem(load(api, line * 3000), 413)


def test_more_tests_than_kept_are_refused(app: Flask, api: Api) -> None:
    text = "".join(f"anonymous, GET, /n/{i}, deny\n" for i in range(10_001))
    with unchanged(app):
        problem = is_problem(load(api, text), 400)
    assert "at most 10000" in problem["detail"]


# -- who may: policy rows, as for every policy endpoint -----------------------------------

READS = [TESTS, f"{TESTS}/{KEPT[0].id}", f"{TESTS}/export"]
WRITES = [
    ("POST", TESTS, NEW),
    ("DELETE", f"{TESTS}/{KEPT[0].id}", None),
    ("POST", f"{TESTS}/load", "user, GET, /, allow\n"),
]


def _send(client: FlaskClient, method: str, path: str, body: Any, **headers: str) -> Any:
    if isinstance(body, str):
        return client.open(
            f"{API}{path}", method=method, data=body, content_type="text/csv", headers=headers
        )
    return client.open(f"{API}{path}", method=method, json=body, headers=headers)


@pytest.mark.parametrize("path", READS)
def test_anonymous_and_plain_users_cannot_read_tests(
    app: Flask, client: FlaskClient, auth: AuthActions, path: str
) -> None:
    store(app, KEPT[0])
    is_problem(client.get(f"{API}{path}"), 401)
    auth.login()
    is_problem(client.get(f"{API}{path}"), 403)


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_anonymous_and_plain_users_cannot_write_tests(
    app: Flask, client: FlaskClient, auth: AuthActions, method: str, path: str, body: Any
) -> None:
    store(app, KEPT[0])
    with unchanged(app):
        is_problem(_send(client, method, path, body), 401)
        is_problem(_send(client, method, url(path, dry_run="1"), body), 401)
        auth.login()
        token = csrf_token(client, "/logout")
        is_problem(_send(client, method, path, body, **{"X-CSRFToken": token}), 403)
    assert stored(app) == [KEPT[0]]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_session_writes_need_the_csrf_token(
    app: Flask, api: Api, method: str, path: str, body: Any
) -> None:
    store(app, KEPT[0])
    with unchanged(app):
        problem = is_problem(_send(api.client, method, path, body), 400)
    assert "CSRF" in problem["detail"]
    assert stored(app) == [KEPT[0]]


def test_a_service_token_with_the_admin_role_writes_without_csrf(app: Flask) -> None:
    client = app.test_client()
    headers = bearer(make_token(app, "ops", roles=["admin"]))
    added = client.post(f"{API}{TESTS}", json=NEW, headers=headers)
    assert added.status_code == 201
    assert audit_log(app)[0].actor == "token:ops"
    loaded = client.post(
        f"{API}{TESTS}/load", data="user, GET, /, allow\n", content_type="text/csv", headers=headers
    )
    assert loaded.status_code == 200


def test_a_policy_row_can_grant_a_role_the_listing_only(app: Flask, api: Api) -> None:
    """Who reads or writes tests is decided by rows, as for every other endpoint."""
    api.post("/policy/rules", {"subject": "user", "path": f"{API}{TESTS}", "methods": "GET"})
    other = app.test_client()
    AuthActions(other).login()
    assert other.get(f"{API}{TESTS}").status_code == 200
    token = csrf_token(other, "/logout")
    assert other.post(f"{API}{TESTS}", json=NEW, headers={"X-CSRFToken": token}).status_code == 403
    assert other.get(f"{API}{TESTS}/export").status_code == 403


# -- the OpenAPI document -----------------------------------------------------------------


def test_the_document_describes_dry_runs_and_the_refusal(client: FlaskClient) -> None:
    document = client.get(f"{API}/openapi.json").json
    paths = document["paths"]
    writes = [
        ("/policy/rules", "post"),
        ("/policy/rules/{rule_id}", "put"),
        ("/policy/rules/{rule_id}", "delete"),
        ("/policy/roles", "post"),
        ("/policy/roles/{rule_id}", "delete"),
        ("/tokens", "post"),
        ("/tokens/{name}", "delete"),
        ("/policy/tests", "post"),
        ("/policy/tests/{test_id}", "delete"),
        ("/policy/tests/load", "post"),
    ]
    for path, method in writes:
        op = paths[f"{API}{path}"][method]
        assert "dry_run" in [p["name"] for p in op.get("parameters", [])], (path, method)
        assert "200" in op["responses"], (path, method)
    problem = document["components"]["schemas"]["Problem"]["properties"]
    assert problem["tests"]["items"] == {"$ref": "#/components/schemas/TestResult"}
    load = paths[f"{API}/policy/tests/load"]["post"]
    assert list(load["requestBody"]["content"]) == ["text/csv"]
    export = paths[f"{API}/policy/tests/export"]["get"]
    assert list(export["responses"]["200"]["content"]) == ["text/csv"]
