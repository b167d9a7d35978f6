"""The JSON API under /api/v1 through the Flask test client, on a real SQLite database."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authz import AuditEntry
from authz import Change
from authz import PolicyEngine
from authz import Rule
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import csrf_token

API = "/api/v1"
PROBLEM = "application/problem+json"

HOME = Rule.of("p", "user", "/", "GET", "allow")
LOGIN = Rule.of("p", "anonymous", "/login", "GET|POST", "allow")
EDITOR = Rule.of("p", "admin", "/admin/*", ".*", "allow")
USER_LINK = Rule.of("g", USER, "user")
ADMIN_LINK = Rule.of("g", ADMIN, "admin")
#: p rows of the default policy, in policy order, as (subject, path).
DEFAULT_RULES = [
    ("anonymous", "/login"),
    ("anonymous", "/register"),
    ("anonymous", "/static/*"),
    ("anonymous", "/favicon.ico"),
    ("anonymous", "/verify/*"),
    ("anonymous", "/password/*"),
    ("anonymous", "/register/*"),
    ("anonymous", "/healthz"),
    ("anonymous", "/readyz"),
    ("anonymous", "/api/v1/openapi.json"),
    ("user", "/"),
    ("user", "/logout"),
    ("user", "/account"),
    ("user", "/account/*"),
    ("admin", "/admin"),
    ("admin", "/admin/*"),
    ("admin", "/api/v1/*"),
    ("admin", "/metrics"),
]

Body = Callable[[int], dict[str, Any] | None]

#: Every read endpoint.
READS = [
    "/csrf",
    "/policy/rules",
    f"/policy/rules/{HOME.id}",
    "/policy/roles",
    f"/policy/roles/{USER_LINK.id}",
    "/policy/roles/user/members",
    "/users",
    f"/users/{USER}",
    "/audit",
]

#: Every write endpoint: method, path, a valid body for the current revision.
WRITES: list[tuple[str, str, Body]] = [
    (
        "POST",
        "/policy/rules",
        lambda rev: {"subject": "user", "path": "/new", "methods": "GET", "revision": rev},
    ),
    (
        "PUT",
        f"/policy/rules/{HOME.id}",
        lambda rev: {"subject": "user", "path": "/", "methods": "GET|POST", "revision": rev},
    ),
    ("DELETE", f"/policy/rules/{HOME.id}", lambda rev: {"revision": rev}),
    ("POST", "/policy/roles", lambda rev: {"member": USER, "role": "admin", "revision": rev}),
    ("DELETE", f"/policy/roles/{USER_LINK.id}", lambda rev: {"revision": rev}),
    ("POST", f"/users/{USER}/deactivate", lambda rev: None),
    ("POST", f"/users/{USER}/activate", lambda rev: None),
    ("POST", "/decisions", lambda rev: {"subject": USER, "path": "/", "method": "GET"}),
    (
        "POST",
        "/decisions/batch",
        lambda rev: {"requests": [{"subject": USER, "path": "/", "method": "GET"}]},
    ),
]
#: The writes that change the policy, and so name the revision they were based on.
POLICY_WRITES = [w for w in WRITES if w[1].startswith("/policy/")]


class Api:
    """A JSON client on the test client's session; writes carry the API's CSRF token."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self._token: str | None = None

    @property
    def token(self) -> str:
        if self._token is None:
            response = self.client.get(f"{API}/csrf")
            assert response.status_code == 200, response.get_data(as_text=True)
            self._token = response.json["csrf_token"]
        return self._token

    def get(self, path: str) -> TestResponse:
        return self.client.get(f"{API}{path}")

    def send(
        self, method: str, path: str, body: Any = None, *, csrf: bool = True, **kwargs: Any
    ) -> TestResponse:
        headers = {"X-CSRFToken": self.token} if csrf else {}
        if body is not None:
            kwargs["json"] = body
        return self.client.open(f"{API}{path}", method=method, headers=headers, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> TestResponse:
        return self.send("POST", path, body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> TestResponse:
        return self.send("PUT", path, body, **kwargs)

    def delete(self, path: str, body: Any = None, **kwargs: Any) -> TestResponse:
        return self.send("DELETE", path, body, **kwargs)


@pytest.fixture
def api(client: FlaskClient, auth: AuthActions) -> Api:
    """The API as the admin."""
    auth.login(ADMIN, ADMIN_PASSWORD)
    return Api(client)


@pytest.fixture
def user_client(app: Flask) -> FlaskClient:
    """A second browser, logged in as the plain user."""
    other = app.test_client()
    AuthActions(other).login()
    return other


def engine_of(app: Flask) -> PolicyEngine:
    return app.extensions["authz"]


def audit_log(app: Flask) -> list[AuditEntry]:
    return engine_of(app).store.audit_entries(limit=100_000)


def state(app: Flask) -> tuple[tuple[Rule, ...], int, int]:
    """The rule rows, the revision and the number of audit entries."""
    engine = engine_of(app)
    return engine.rules(), engine.revision, len(audit_log(app))


@contextmanager
def unchanged(app: Flask) -> Iterator[None]:
    """Assert that nothing in the block changed rows, revision or audit log."""
    before = state(app)
    yield
    assert state(app) == before


def is_problem(response: TestResponse, status: int) -> dict[str, Any]:
    """Assert a problem document with this status; return its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.json
    assert isinstance(body, dict)
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def error_fields(response: TestResponse) -> list[str | None]:
    """The fields a 400 problem document names."""
    return [e["field"] for e in is_problem(response, 400)["errors"]]


def bump(app: Flask) -> int:
    """Make an unrelated change; return the revision it was based on."""
    engine = engine_of(app)
    before = engine.revision
    engine.apply(Change.adding(Rule.of("p", "user", "/bump", "GET")), actor="t", source="cli")
    return before


# -- who may call the API: policy rows ------------------------------------------------------


@pytest.mark.parametrize("path", READS)
def test_anonymous_reads_get_401(client: FlaskClient, path: str) -> None:
    response = client.get(f"{API}{path}")
    is_problem(response, 401)
    assert response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_anonymous_writes_get_401(
    app: Flask, client: FlaskClient, method: str, path: str, body: Body
) -> None:
    with unchanged(app):
        response = client.open(f"{API}{path}", method=method, json=body(engine_of(app).revision))
        is_problem(response, 401)


@pytest.mark.parametrize("path", READS)
def test_plain_user_reads_get_403(client: FlaskClient, auth: AuthActions, path: str) -> None:
    auth.login()
    is_problem(client.get(f"{API}{path}"), 403)


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_plain_user_writes_get_403(
    app: Flask, client: FlaskClient, auth: AuthActions, method: str, path: str, body: Body
) -> None:
    auth.login()
    token = csrf_token(client, "/logout")  # a valid token: the policy alone refuses
    with unchanged(app):
        response = client.open(
            f"{API}{path}",
            method=method,
            json=body(engine_of(app).revision),
            headers={"X-CSRFToken": token},
        )
        is_problem(response, 403)


@pytest.mark.parametrize("path", READS)
def test_admin_reads_answer_json_with_the_revision(app: Flask, api: Api, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 200 and response.mimetype == "application/json"
    if path != "/csrf":
        assert response.json["revision"] == engine_of(app).revision


def test_a_role_granted_the_api_by_a_policy_row_may_use_it(
    app: Flask, api: Api, user_client: FlaskClient
) -> None:
    assert user_client.get(f"{API}/users").status_code == 403
    revision = engine_of(app).revision
    rule = {"subject": "user", "path": "/api/v1/users", "methods": "GET", "revision": revision}
    assert api.post("/policy/rules", rule).status_code == 201
    assert user_client.get(f"{API}/users").status_code == 200
    assert user_client.get(f"{API}/audit").status_code == 403


def test_unknown_api_paths_and_methods_are_problem_documents(api: Api) -> None:
    is_problem(api.get("/nope"), 404)
    is_problem(api.send("PATCH", "/policy/rules", {}), 405)


# -- CSRF ---------------------------------------------------------------------------------------


def test_csrf_endpoint_hands_out_the_session_token(api: Api) -> None:
    first = api.get("/csrf").json["csrf_token"]
    assert isinstance(first, str) and len(first) > 20
    assert api.get("/csrf").json["csrf_token"]


@pytest.mark.parametrize("token", [None, "not-a-token"])
@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_writes_without_a_valid_csrf_token_are_refused(
    app: Flask, api: Api, method: str, path: str, body: Body, token: str | None
) -> None:
    headers = {"X-CSRFToken": token} if token else {}
    with unchanged(app):
        response = api.client.open(
            f"{API}{path}", method=method, json=body(engine_of(app).revision), headers=headers
        )
        problem = is_problem(response, 400)
    assert "CSRF" in problem["detail"]
    assert engine_of(app).snapshot.decide(USER, "/", "GET").allowed  # the user kept access


def test_a_csrf_token_of_another_session_is_refused(app: Flask, api: Api) -> None:
    other = Api(app.test_client())
    AuthActions(other.client).login(ADMIN, ADMIN_PASSWORD)
    body = {"subject": "user", "path": "/x", "methods": "GET", "revision": engine_of(app).revision}
    with unchanged(app):
        response = api.client.post(
            f"{API}/policy/rules", json=body, headers={"X-CSRFToken": other.token}
        )
        is_problem(response, 400)


# -- revisions ----------------------------------------------------------------------------


def test_every_read_and_write_names_the_current_revision(app: Flask, api: Api) -> None:
    before = engine_of(app).revision
    assert api.get("/policy/rules").json["revision"] == before
    body = {"subject": "user", "path": "/r", "methods": "GET", "revision": before}
    assert api.post("/policy/rules", body).json["revision"] == before + 1
    assert api.get("/policy/roles").json["revision"] == before + 1


@pytest.mark.parametrize(("method", "path", "body"), POLICY_WRITES)
def test_a_write_is_not_stale_because_other_rows_changed(
    app: Flask, api: Api, method: str, path: str, body: Body
) -> None:
    """Checked per row: a change elsewhere since the client read does not refuse it."""
    old = bump(app)
    response = api.send(method, path, body(old))
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    assert response.json["revision"] == old + 2


@pytest.mark.parametrize(("method", "path", "body"), POLICY_WRITES)
def test_a_write_may_leave_out_its_revision(
    app: Flask, api: Api, method: str, path: str, body: Body
) -> None:
    data = body(engine_of(app).revision) or {}
    del data["revision"]
    response = api.send(method, path, data or None)
    assert response.status_code in (200, 201), response.get_data(as_text=True)


def test_two_admins_editing_one_rule_the_second_gets_409_with_the_current_row(
    app: Flask, api: Api
) -> None:
    read_at = engine_of(app).revision
    first = {"subject": "user", "path": "/", "methods": "GET|POST", "revision": read_at}
    assert api.send("PUT", f"/policy/rules/{HOME.id}", first).status_code == 200
    second = {"subject": "user", "path": "/home", "methods": "GET", "revision": read_at}
    with unchanged(app):
        problem = is_problem(api.send("PUT", f"/policy/rules/{HOME.id}", second), 409)
    assert problem["reason"] == "conflict"
    assert problem["current"]["methods"] == "GET|POST" and problem["current"]["path"] == "/"
    assert problem["yours"]["path"] == "/home"
    assert problem["changed_by"] == ADMIN
    # The client can now edit the current row by its id.
    again = api.send("PUT", f"/policy/rules/{problem['current']['id']}", second)
    assert again.status_code == 200
    assert Rule.of("p", "user", "/home", "GET", "allow") in engine_of(app).snapshot.ruleset


def test_removing_a_rule_another_admin_removed_is_a_conflict_naming_it_gone(
    app: Flask, api: Api
) -> None:
    read_at = engine_of(app).revision
    assert api.delete(f"/policy/rules/{HOME.id}?revision={read_at}").status_code == 200
    with unchanged(app):
        problem = is_problem(api.delete(f"/policy/rules/{HOME.id}?revision={read_at}"), 409)
        assert problem["current"] is None and problem["changed_by"] == ADMIN
        # Without the revision it was read at, nothing tells what happened: 404.
        is_problem(api.delete(f"/policy/rules/{HOME.id}"), 404)


def test_an_edit_of_a_rule_id_that_names_a_role_assignment_is_404(app: Flask, api: Api) -> None:
    body = {"subject": "user", "path": "/", "methods": "GET"}
    with unchanged(app):
        is_problem(api.send("PUT", f"/policy/rules/{USER_LINK.id}", body), 404)
        is_problem(api.delete(f"/policy/rules/{USER_LINK.id}"), 404)


def test_a_delete_may_name_its_revision_in_the_query(app: Flask, api: Api) -> None:
    old = bump(app)
    with unchanged(app):
        both = api.delete(f"/policy/rules/{HOME.id}?revision={old + 1}", {"revision": old + 1})
        assert error_fields(both) == ["revision"]
    response = api.delete(f"/policy/rules/{HOME.id}?revision={old}")
    assert response.status_code == 200
    assert HOME not in engine_of(app).snapshot.ruleset


# -- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("[]", "application/json"),
        ('"rule"', "application/json"),
        ("null", "application/json"),
        ("{not json", "application/json"),
        ("subject=user&path=/x&methods=GET&revision=1", "application/x-www-form-urlencoded"),
        ("", "application/json"),
    ],
)
@pytest.mark.parametrize("path", ["/policy/rules", "/policy/roles", "/decisions"])
def test_bodies_that_are_not_json_objects_are_refused(
    app: Flask, api: Api, path: str, data: str, content_type: str
) -> None:
    with unchanged(app):
        response = api.client.post(
            f"{API}{path}",
            data=data,
            content_type=content_type,
            headers={"X-CSRFToken": api.token},
        )
        assert error_fields(response) == [None]


# -- rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", DEFAULT_RULES + [("user", "/private")]),
        ("?subject=anonymous", [r for r in DEFAULT_RULES if r[0] == "anonymous"]),
        ("?subject=admin", [r for r in DEFAULT_RULES if r[0] == "admin"]),
        ("?subject=nobody", []),
        ("?q=LOGIN", [("anonymous", "/login")]),
        ("?q=log", [("anonymous", "/login"), ("user", "/logout")]),
        (
            "?q=get%7Cpost",
            [
                ("anonymous", "/login"),
                ("anonymous", "/register"),
                ("anonymous", "/verify/*"),
                ("anonymous", "/password/*"),
                ("anonymous", "/register/*"),
                ("user", "/logout"),
                ("user", "/account/*"),
            ],
        ),
        ("?q=deny", [("user", "/private")]),
        ("?effect=deny", [("user", "/private")]),
        ("?effect=allow", DEFAULT_RULES),
        (
            "?subject=user&effect=allow",
            [("user", "/"), ("user", "/logout"), ("user", "/account"), ("user", "/account/*")],
        ),
        ("?subject=admin&q=api", [("admin", "/api/v1/*")]),
    ],
)
def test_rules_are_listed_with_filters(
    app: Flask, api: Api, query: str, expected: list[tuple[str, str]]
) -> None:
    engine_of(app).apply(
        Change.adding(Rule.of("p", "user", "/private", "GET", "deny")), actor="t", source="cli"
    )
    body = api.get(f"/policy/rules{query}").json
    assert body["total"] == len(expected)
    assert [(r["subject"], r["path"]) for r in body["items"]] == expected


def test_rules_are_listed_a_page_at_a_time(api: Api) -> None:
    total = len(DEFAULT_RULES)
    count = -(-total // 4) + 1  # every page, and one past the last
    pages = [api.get(f"/policy/rules?per_page=4&page={n}").json for n in range(1, count + 1)]
    sizes = [min(4, max(0, total - 4 * n)) for n in range(count)]
    assert [len(p["items"]) for p in pages] == sizes
    assert sizes[-1] == 0
    assert all(p["total"] == total and p["per_page"] == 4 for p in pages)
    paths = [r["path"] for p in pages for r in p["items"]]
    assert paths == [path for _, path in DEFAULT_RULES]
    first = api.get("/policy/rules").json["items"][0]
    assert first == {
        "id": LOGIN.id,
        "subject": "anonymous",
        "path": "/login",
        "methods": "GET|POST",
        "effect": "allow",
    }


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/policy/rules?page=0", "page"),
        ("/policy/rules?page=two", "page"),
        ("/policy/rules?per_page=201", "per_page"),
        ("/policy/rules?per_page=0", "per_page"),
        ("/policy/rules?effect=maybe", "effect"),
        ("/policy/roles?page=-1", "page"),
        ("/users?per_page=1000", "per_page"),
        ("/audit?page=x", "page"),
        ("/audit?since=yesterday", "since"),
        ("/audit?until=2026-13-01", "until"),
    ],
)
def test_bad_query_parameters_are_named(api: Api, path: str, field: str) -> None:
    assert error_fields(api.get(path)) == [field]


def test_per_page_may_be_200(api: Api) -> None:
    assert api.get("/policy/rules?per_page=200").json["per_page"] == 200


def test_a_rule_is_read_by_id(app: Flask, api: Api) -> None:
    body = api.get(f"/policy/rules/{HOME.id}").json
    assert body == {
        "revision": engine_of(app).revision,
        "rule": {
            "id": HOME.id,
            "subject": "user",
            "path": "/",
            "methods": "GET",
            "effect": "allow",
        },
    }


@pytest.mark.parametrize(
    "path",
    [
        "/policy/rules/0123456789abcdef",
        f"/policy/rules/{USER_LINK.id}",  # a role assignment is not a rule
        "/policy/roles/0123456789abcdef",
        f"/policy/roles/{HOME.id}",  # nor a rule a role assignment
        "/policy/roles/nosuchrole/members",
        "/users/nobody@example.com",
    ],
)
def test_unknown_ids_are_404(api: Api, path: str) -> None:
    is_problem(api.get(path), 404)


@pytest.mark.parametrize(
    ("extra", "effect"),
    [({}, "allow"), ({"effect": "allow"}, "allow"), ({"effect": "deny"}, "deny")],
)
def test_a_rule_is_added(app: Flask, api: Api, extra: dict[str, str], effect: str) -> None:
    before = engine_of(app).revision
    body = {"subject": "user", "path": "/reports/:id", "methods": "GET|POST", **extra}
    response = api.post("/policy/rules", {**body, "revision": before})
    assert response.status_code == 201
    rule = Rule.of("p", "user", "/reports/:id", "GET|POST", effect)
    assert response.json == {
        "revision": before + 1,
        "rule": {**body, "effect": effect, "id": rule.id},
        "warnings": [],
    }
    assert response.headers["Location"] == f"{API}/policy/rules/{rule.id}"
    assert rule in engine_of(app).snapshot.ruleset
    entry = audit_log(app)[0]
    assert (entry.actor, entry.source, entry.action) == (ADMIN, "api", "rule.add")
    assert (entry.added, entry.removed, entry.revision) == ((rule,), (), before + 1)
    assert api.get(f"/policy/rules/{rule.id}").status_code == 200


RULE = {"subject": "user", "path": "/reports", "methods": "GET", "effect": "allow"}


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"subject": ""}, ["subject"]),
        ({"subject": "Not A Role"}, ["subject"]),
        ({"subject": "Admin@Example.com"}, ["subject"]),
        ({"subject": 5}, ["subject"]),
        ({"subject": None}, ["subject"]),
        ({"path": "reports"}, ["path"]),
        ({"path": " /reports"}, ["path"]),
        ({"path": "/a\x00b"}, ["path"]),
        ({"methods": "GET("}, ["methods"]),
        ({"methods": ["GET"]}, ["methods"]),
        ({"effect": "maybe"}, ["effect"]),
        ({"subject": "x" * 300}, ["subject"]),
        ({"extra": "value"}, ["extra"]),
        ({"revision": "3"}, ["revision"]),
        ({"revision": True}, ["revision"]),
        ({"revision": -1}, ["revision"]),
        ({"subject": 1, "path": 2, "owner": "me"}, ["owner", "subject", "path"]),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_invalid_rules_are_refused_naming_the_field(
    app: Flask, api: Api, method: str, change: dict[str, Any], fields: list[str]
) -> None:
    path = "/policy/rules" if method == "POST" else f"/policy/rules/{HOME.id}"
    body = {**RULE, "revision": engine_of(app).revision, **change}
    with unchanged(app):
        assert error_fields(api.send(method, path, body)) == fields


@pytest.mark.parametrize("missing", ["subject", "path", "methods"])
def test_rule_fields_are_required(app: Flask, api: Api, missing: str) -> None:
    body = {**RULE, "revision": engine_of(app).revision}
    del body[missing]
    with unchanged(app):
        response = api.post("/policy/rules", body)
        assert error_fields(response) == [missing]
    assert is_problem(response, 400)["errors"][0]["message"] == "is required"


def test_adding_a_rule_the_policy_has_is_a_conflict(app: Flask, api: Api) -> None:
    body = {"subject": "user", "path": "/", "methods": "GET", "revision": engine_of(app).revision}
    with unchanged(app):
        problem = is_problem(api.post("/policy/rules", body), 409)
    assert problem["reason"] == "duplicate" and problem["existing"]["id"] == HOME.id


def test_a_rule_is_replaced_in_one_change(app: Flask, api: Api) -> None:
    before = engine_of(app).revision
    audited = len(audit_log(app))
    body = {"subject": "user", "path": "/", "methods": "GET|HEAD", "revision": before}
    response = api.put(f"/policy/rules/{HOME.id}", body)
    assert response.status_code == 200
    new = Rule.of("p", "user", "/", "GET|HEAD", "allow")
    assert response.json["rule"]["id"] == new.id != HOME.id
    assert response.json["revision"] == before + 1
    ruleset = engine_of(app).snapshot.ruleset
    assert new in ruleset and HOME not in ruleset
    log = audit_log(app)
    assert len(log) == audited + 1
    assert (log[0].actor, log[0].source, log[0].action) == (ADMIN, "api", "rule.edit")
    assert (log[0].added, log[0].removed) == ((new,), (HOME,))
    is_problem(api.get(f"/policy/rules/{HOME.id}"), 404)


def test_replacing_a_rule_with_itself_changes_nothing(app: Flask, api: Api) -> None:
    body = {"subject": "user", "path": "/", "methods": "GET", "revision": engine_of(app).revision}
    with unchanged(app):
        response = api.put(f"/policy/rules/{HOME.id}", body)
    assert response.status_code == 200 and response.json["rule"]["id"] == HOME.id


def test_replacing_a_rule_with_another_existing_rule_is_a_conflict(app: Flask, api: Api) -> None:
    body = {"subject": "user", "path": "/logout", "methods": "GET|POST"}
    with unchanged(app):
        response = api.put(
            f"/policy/rules/{HOME.id}", {**body, "revision": engine_of(app).revision}
        )
        assert is_problem(response, 409)["reason"] == "duplicate"


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_writing_an_unknown_rule_is_404(app: Flask, api: Api, method: str) -> None:
    body = {**RULE, "revision": engine_of(app).revision}
    if method == "DELETE":
        body = {"revision": body["revision"]}
    with unchanged(app):
        is_problem(api.send(method, "/policy/rules/0123456789abcdef", body), 404)
        is_problem(api.send(method, f"/policy/rules/{USER_LINK.id}", body), 404)


@pytest.mark.parametrize("in_query", [False, True])
def test_a_rule_is_removed(app: Flask, api: Api, in_query: bool) -> None:
    before = engine_of(app).revision
    if in_query:
        response = api.delete(f"/policy/rules/{HOME.id}?revision={before}")
    else:
        response = api.delete(f"/policy/rules/{HOME.id}", {"revision": before})
    assert response.status_code == 200
    assert response.json["revision"] == before + 1
    assert response.json["removed"]["id"] == HOME.id
    assert HOME not in engine_of(app).snapshot.ruleset
    entry = audit_log(app)[0]
    assert (entry.actor, entry.source, entry.action) == (ADMIN, "api", "rule.remove")
    assert (entry.added, entry.removed, entry.revision) == ((), (HOME,), before + 1)


def test_removing_the_editor_rule_is_refused_by_the_lockout_guard(app: Flask, api: Api) -> None:
    with unchanged(app):
        response = api.delete(f"/policy/rules/{EDITOR.id}", {"revision": engine_of(app).revision})
        problem = is_problem(response, 409)
    assert problem["reason"] == "lockout" and "/admin/" in problem["detail"]


def test_turning_the_editor_rule_into_a_deny_is_refused(app: Flask, api: Api) -> None:
    body = {"subject": "admin", "path": "/admin/*", "methods": ".*", "effect": "deny"}
    with unchanged(app):
        response = api.put(
            f"/policy/rules/{EDITOR.id}", {**body, "revision": engine_of(app).revision}
        )
        assert is_problem(response, 409)["reason"] == "lockout"


def test_a_rule_added_through_the_api_governs_the_next_request(
    app: Flask, api: Api, user_client: FlaskClient
) -> None:
    assert user_client.get("/admin/").status_code == 403
    body = {
        "subject": "user",
        "path": "/admin/",
        "methods": "GET",
        "revision": engine_of(app).revision,
    }
    created = api.post("/policy/rules", body)
    assert created.status_code == 201
    assert user_client.get("/admin/").status_code == 200
    rule_id, revision = created.json["rule"]["id"], created.json["revision"]
    assert api.delete(f"/policy/rules/{rule_id}", {"revision": revision}).status_code == 200
    assert user_client.get("/admin/").status_code == 403


# -- role assignments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [("user", "anonymous"), ("admin", "user"), (ADMIN, "admin"), (USER, "user")]),
        ("?member=user", [("user", "anonymous")]),
        (f"?member={USER}", [(USER, "user")]),
        ("?role=user", [("admin", "user"), (USER, "user")]),
        ("?role=admin&member=admin%40example.com", [(ADMIN, "admin")]),
        ("?role=nobody", []),
        ("?per_page=1&page=2", [("admin", "user")]),
    ],
)
def test_role_assignments_are_listed_with_filters(
    api: Api, query: str, expected: list[tuple[str, str]]
) -> None:
    items = api.get(f"/policy/roles{query}").json["items"]
    assert [(i["member"], i["role"]) for i in items] == expected
    assert all(i["id"] == Rule.of("g", i["member"], i["role"]).id for i in items)


def test_a_role_assignment_is_read_by_id(api: Api) -> None:
    body = api.get(f"/policy/roles/{USER_LINK.id}").json
    assert body["assignment"] == {"id": USER_LINK.id, "member": USER, "role": "user"}


@pytest.mark.parametrize(
    ("role", "members"), [("admin", [ADMIN]), ("user", ["admin", USER]), ("anonymous", ["user"])]
)
def test_role_members_are_listed(api: Api, role: str, members: list[str]) -> None:
    assert api.get(f"/policy/roles/{role}/members").json["members"] == members


def test_a_role_is_assigned_and_governs_the_next_request(
    app: Flask, api: Api, user_client: FlaskClient
) -> None:
    before = engine_of(app).revision
    assert user_client.get(f"{API}/users").status_code == 403
    response = api.post("/policy/roles", {"member": USER, "role": "admin", "revision": before})
    assert response.status_code == 201
    link = Rule.of("g", USER, "admin")
    assert response.json == {
        "revision": before + 1,
        "assignment": {"id": link.id, "member": USER, "role": "admin"},
        "warnings": [],
    }
    assert response.headers["Location"] == f"{API}/policy/roles/{link.id}"
    entry = audit_log(app)[0]
    assert (entry.actor, entry.source, entry.action) == (ADMIN, "api", "role.assign")
    assert (entry.added, entry.removed, entry.revision) == ((link,), (), before + 1)
    assert user_client.get(f"{API}/users").status_code == 200
    removed = api.delete(f"/policy/roles/{link.id}", {"revision": before + 1})
    assert removed.status_code == 200
    assert removed.json["removed"] == {"id": link.id, "member": USER, "role": "admin"}
    entry = audit_log(app)[0]
    assert (entry.actor, entry.source, entry.action) == (ADMIN, "api", "role.remove")
    assert (entry.added, entry.removed) == ((), (link,))
    assert user_client.get(f"{API}/users").status_code == 403


def test_a_role_may_inherit_another(app: Flask, api: Api) -> None:
    body = {"member": "auditor", "role": "user", "revision": engine_of(app).revision}
    assert api.post("/policy/roles", body).status_code == 201
    assert engine_of(app).roles_for("auditor") == ["anonymous", "user"]


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"member": "Not A Member"}, ["member"]),
        ({"member": "User@Example.com"}, ["member"]),
        ({"member": ""}, ["member"]),
        ({"role": "Admin"}, ["role"]),
        ({"role": USER}, ["role"]),  # users cannot be inherited
        ({"role": "nosuchrole"}, ["role"]),  # a typo, not a new role
        ({"member": "ghost@example.com", "role": "nosuchrole"}, ["role"]),
        ({"member": "anonymous", "role": "admin"}, ["role"]),  # a cycle: visitors as admins
        ({"member": "user", "role": "user"}, ["role"]),
        ({"role": 7}, ["role"]),
        ({"force": True}, ["force"]),
    ],
)
def test_invalid_role_assignments_are_refused_naming_the_field(
    app: Flask, api: Api, change: dict[str, Any], fields: list[str]
) -> None:
    body = {"member": USER, "role": "admin", "revision": engine_of(app).revision, **change}
    with unchanged(app):
        assert error_fields(api.post("/policy/roles", body)) == fields


def test_assigning_a_role_twice_is_a_conflict(app: Flask, api: Api) -> None:
    body = {"member": USER, "role": "user", "revision": engine_of(app).revision}
    with unchanged(app):
        problem = is_problem(api.post("/policy/roles", body), 409)
    assert problem["reason"] == "duplicate" and problem["existing"]["id"] == USER_LINK.id


def test_removing_the_last_admins_role_is_refused_by_the_lockout_guard(
    app: Flask, api: Api
) -> None:
    with unchanged(app):
        response = api.delete(
            f"/policy/roles/{ADMIN_LINK.id}", {"revision": engine_of(app).revision}
        )
        problem = is_problem(response, 409)
    assert problem["reason"] == "lockout"
    assert "no active user could GET /admin/" in problem["detail"]
    assert api.get("/policy/roles").status_code == 200  # still an admin


def test_the_admin_role_may_go_once_another_admin_exists(app: Flask, api: Api) -> None:
    revision = engine_of(app).revision
    added = api.post("/policy/roles", {"member": USER, "role": "admin", "revision": revision})
    assert added.status_code == 201
    response = api.delete(f"/policy/roles/{ADMIN_LINK.id}", {"revision": revision + 1})
    assert response.status_code == 200
    assert ADMIN_LINK not in engine_of(app).snapshot.ruleset


def test_removing_an_unknown_role_assignment_is_404(app: Flask, api: Api) -> None:
    with unchanged(app):
        response = api.delete(
            "/policy/roles/0123456789abcdef", {"revision": engine_of(app).revision}
        )
        is_problem(response, 404)


# -- users --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "emails", "total"),
    [
        ("", [ADMIN, USER], 2),
        ("?q=admin", [ADMIN], 1),
        ("?q=USER@", [USER], 1),
        ("?q=nobody", [], 0),
        ("?per_page=1&page=2", [USER], 2),
        ("?per_page=1&page=3", [], 2),
    ],
)
def test_users_are_listed(api: Api, query: str, emails: list[str], total: int) -> None:
    body = api.get(f"/users{query}").json
    assert [u["email"] for u in body["items"]] == emails
    assert body["total"] == total


def test_a_listed_user_has_state_direct_roles_and_creation_time(api: Api) -> None:
    item = api.get("/users?q=user@").json["items"][0]
    assert (item["email"], item["active"], item["roles"]) == (USER, True, ["user"])
    assert item["created_at"].endswith("+00:00")


def test_a_user_shows_effective_roles_and_permissions(app: Flask, api: Api) -> None:
    engine_of(app).apply(Change.adding(Rule.of("p", USER, "/mine", "GET")), actor="t", source="cli")
    # Only the stored spelling names the account (tests/integration/test_spellings.py).
    assert api.get("/users/USER@example.com").status_code == 404
    user = api.get(f"/users/{USER}").json["user"]
    assert user["email"] == USER and user["roles"] == ["user"]
    assert user["effective_roles"] == ["anonymous", "user"]
    assert [(p["subject"], p["path"]) for p in user["permissions"]] == [
        *[r for r in DEFAULT_RULES if r[0] in ("anonymous", "user")],
        (USER, "/mine"),
    ]


def test_an_admin_holds_every_inherited_permission(api: Api) -> None:
    user = api.get(f"/users/{ADMIN}").json["user"]
    assert user["effective_roles"] == ["admin", "anonymous", "user"]
    assert len(user["permissions"]) == len(DEFAULT_RULES)


def test_a_user_is_deactivated_and_activated(
    app: Flask, api: Api, user_client: FlaskClient
) -> None:
    assert user_client.get("/").status_code == 200
    response = api.post(f"/users/{USER}/deactivate")
    assert response.status_code == 200 and response.json["user"]["active"] is False
    entry = audit_log(app)[0]
    assert (entry.actor, entry.source, entry.action, entry.detail) == (
        ADMIN,
        "api",
        "user.deactivate",
        USER,
    )
    assert (entry.added, entry.removed) == ((), ())
    # Their session ended with the deactivation: the next request is a visitor's.
    assert user_client.get("/").status_code == 302
    response = api.post(f"/users/{USER}/activate", {})
    assert response.status_code == 200 and response.json["user"]["active"] is True
    assert audit_log(app)[0].action == "user.activate"
    assert api.get(f"/users/{USER}").json["user"]["active"] is True


def test_deactivating_the_last_admin_is_refused_by_the_lockout_guard(app: Flask, api: Api) -> None:
    with unchanged(app):
        problem = is_problem(api.post(f"/users/{ADMIN}/deactivate"), 409)
    assert problem["reason"] == "lockout"
    assert api.get(f"/users/{ADMIN}").json["user"]["active"] is True


@pytest.mark.parametrize("action", ["activate", "deactivate"])
def test_activating_an_unknown_account_is_404(app: Flask, api: Api, action: str) -> None:
    with unchanged(app):
        is_problem(api.post(f"/users/ghost@example.com/{action}"), 404)


@pytest.mark.parametrize("body", [{"force": True}, {"revision": 3}, []])
def test_deactivation_takes_no_fields(app: Flask, api: Api, body: Any) -> None:
    with unchanged(app):
        assert is_problem(api.post(f"/users/{USER}/deactivate", body), 400)["errors"]
    assert api.get(f"/users/{USER}").json["user"]["active"] is True


# -- audit --------------------------------------------------------------------------------


def test_the_audit_log_lists_changes_newest_first(app: Flask, api: Api) -> None:
    revision = engine_of(app).revision
    body = {"subject": "user", "path": "/a", "methods": "GET", "revision": revision}
    rule = api.post("/policy/rules", body).json["rule"]
    api.delete(f"/policy/rules/{rule['id']}", {"revision": revision + 1})
    items = api.get("/audit").json["items"]
    assert [i["action"] for i in items] == [
        "rule.remove",
        "rule.add",
        "user.create",
        "user.create-admin",
        "policy.init",
    ]
    newest = items[0]
    assert newest["actor"] == ADMIN and newest["source"] == "api"
    assert newest["added"] == [] and newest["removed"] == [["p", "user", "/a", "GET", "allow"]]
    assert newest["revision"] == revision + 2 and newest["forced"] is False
    assert newest["at"].endswith("+00:00") and isinstance(newest["id"], int)
    assert items[1]["added"] == [["p", "user", "/a", "GET", "allow"]]


@pytest.mark.parametrize(
    ("query", "actions"),
    [
        (f"?actor={ADMIN}", ["rule.add"]),
        ("?actor=test", ["user.create", "user.create-admin", "policy.init"]),
        ("?actor=nobody", []),
        ("?since=2000-01-01", ["rule.add", "user.create", "user.create-admin", "policy.init"]),
        ("?since=2999-01-01T00:00:00Z", []),
        ("?until=2000-01-01T00:00:00%2B02:00", []),
        ("?until=2999-01-01", ["rule.add", "user.create", "user.create-admin", "policy.init"]),
        ("?per_page=2", ["rule.add", "user.create"]),
        ("?per_page=2&page=2", ["user.create-admin", "policy.init"]),
    ],
)
def test_the_audit_log_is_filtered_and_paged(
    app: Flask, api: Api, query: str, actions: list[str]
) -> None:
    body = {"subject": "user", "path": "/a", "methods": "GET", "revision": engine_of(app).revision}
    assert api.post("/policy/rules", body).status_code == 201
    listing = api.get(f"/audit{query}").json
    assert [i["action"] for i in listing["items"]] == actions


def test_the_audit_log_says_whether_more_pages_follow(api: Api) -> None:
    assert api.get("/audit?per_page=2").json["has_more"] is True
    assert api.get("/audit?per_page=3").json["has_more"] is False


def test_the_audit_log_since_is_a_point_in_time(app: Flask, api: Api) -> None:
    at = audit_log(app)[0].at  # the newest entry
    since = api.get(f"/audit?since={at.isoformat().replace('+', '%2B')}").json
    assert [i["action"] for i in since["items"]] == ["user.create"]


# -- decisions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "path", "method", "allowed", "reason", "rule"),
    [
        ("anonymous", "/login", "POST", True, "allow-rule", ["p", *LOGIN.values]),
        ("anonymous", "/", "GET", False, "no-match", None),
        (USER, "/", "GET", True, "allow-rule", ["p", *HOME.values]),
        (USER, "/", "HEAD", True, "allow-rule", ["p", *HOME.values]),
        (USER, "/admin/", "GET", False, "no-match", None),
        (ADMIN, "/admin/users", "DELETE", True, "allow-rule", ["p", *EDITOR.values]),
        ("admin", "/admin/users", "POST", True, "allow-rule", ["p", *EDITOR.values]),
        (USER, "/private", "GET", False, "deny-rule", ["p", "user", "/private", "GET", "deny"]),
        (ADMIN, "/private", "GET", False, "deny-rule", ["p", "user", "/private", "GET", "deny"]),
    ],
)
def test_a_request_is_decided(
    app: Flask,
    api: Api,
    subject: str,
    path: str,
    method: str,
    allowed: bool,
    reason: str,
    rule: list[str] | None,
) -> None:
    engine_of(app).apply(
        Change.adding(
            Rule.of("p", "user", "/private", ".*", "allow"),
            Rule.of("p", "user", "/private", "GET", "deny"),
        ),
        actor="t",
        source="cli",
    )
    with unchanged(app):
        response = api.post("/decisions", {"subject": subject, "path": path, "method": method})
    assert response.status_code == 200
    body = response.json
    assert (body["allowed"], body["reason"], body["rule"]) == (allowed, reason, rule)
    assert body["subject"] == subject and body["object"] == path
    assert body["action"] == ("GET" if method == "HEAD" else method)
    assert body["explain"].startswith("allow" if allowed else "deny")
    assert body["revision"] == engine_of(app).revision


@pytest.mark.parametrize("path", ["/", "/admin/", "/admin/rules", f"{API}/users", "/logout"])
def test_the_decision_api_agrees_with_the_middleware(
    api: Api, user_client: FlaskClient, path: str
) -> None:
    decision = api.post("/decisions", {"subject": USER, "path": path, "method": "GET"}).json
    status = user_client.get(path).status_code
    assert decision["allowed"] is (status != 403)


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"path": "/a/../admin/"}, ["path"]),
        ({"path": "/a/./b"}, ["path"]),
        ({"path": "//admin/"}, ["path"]),
        ({"path": "/a\\b"}, ["path"]),
        ({"path": "/a\x00"}, ["path"]),
        ({"path": "admin/"}, ["path"]),
        ({"method": "G ET"}, ["method"]),
        ({"method": ""}, ["method"]),
        ({"subject": ""}, ["subject"]),
        ({"subject": None}, ["subject"]),
        ({"subject": "", "path": "x", "method": "?"}, ["subject", "path", "method"]),
        ({"explain": True}, ["explain"]),
    ],
)
def test_invalid_decision_requests_are_refused_naming_the_field(
    api: Api, change: dict[str, Any], fields: list[str]
) -> None:
    body = {"subject": USER, "path": "/", "method": "GET", **change}
    assert error_fields(api.post("/decisions", body)) == fields


def test_a_missing_decision_field_is_named(api: Api) -> None:
    assert error_fields(api.post("/decisions", {"subject": USER, "path": "/"})) == ["method"]


def test_requests_are_decided_in_a_batch(app: Flask, api: Api) -> None:
    requests = [
        {"subject": USER, "path": "/", "method": "GET"},
        {"subject": USER, "path": "/admin/", "method": "GET"},
        {"subject": ADMIN, "path": "/admin/", "method": "HEAD"},
    ]
    with unchanged(app):
        body = api.post("/decisions/batch", {"requests": requests}).json
    assert [d["allowed"] for d in body["decisions"]] == [True, False, True]
    assert [d["subject"] for d in body["decisions"]] == [USER, USER, ADMIN]
    assert body["decisions"][2]["action"] == "GET"
    assert body["revision"] == engine_of(app).revision
    assert api.post("/decisions/batch", {"requests": []}).json["decisions"] == []


def test_a_batch_may_hold_1000_requests_not_more(api: Api) -> None:
    one = {"subject": USER, "path": "/", "method": "GET"}
    full = api.post("/decisions/batch", {"requests": [one] * 1000})
    assert full.status_code == 200 and len(full.json["decisions"]) == 1000
    assert error_fields(api.post("/decisions/batch", {"requests": [one] * 1001})) == ["requests"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"requests": [{"subject": USER, "path": "/", "method": "GET"}, "/"]}, ["requests[1]"]),
        (
            {"requests": [{"subject": USER, "path": "/", "method": "GET"}, {"subject": USER}]},
            ["requests[1].path", "requests[1].method"],
        ),
        (
            {"requests": [{"subject": USER, "path": "/a/../b", "method": "GET"}] * 2},
            ["requests[0].path", "requests[1].path"],
        ),
        ({"requests": {"subject": USER}}, ["requests"]),
        ({}, ["requests"]),
        ({"requests": [], "fast": True}, ["fast"]),
    ],
)
def test_invalid_batches_are_refused_naming_each_bad_request(
    api: Api, body: dict[str, Any], fields: list[str]
) -> None:
    assert error_fields(api.post("/decisions/batch", body)) == fields


# -- one spelling for email subjects; risky rows accepted with warnings -------------------

NO_ACCOUNT = "no account has this email yet; the rule applies once that address registers"


def test_a_role_for_an_email_with_no_account_is_assigned_with_a_warning(
    app: Flask, api: Api
) -> None:
    before = engine_of(app).revision
    body = {"member": "dave@example.com", "role": "admin", "revision": before}
    response = api.post("/policy/roles", body)
    assert response.status_code == 201
    assert response.json["warnings"] == [f"dave@example.com: {NO_ACCOUNT}"]
    assert Rule.of("g", "dave@example.com", "admin") in engine_of(app).rules()


def test_a_rule_for_an_email_with_no_account_is_added_with_a_warning(app: Flask, api: Api) -> None:
    body = {"subject": "dave@example.com", "path": "/reports", "methods": "GET"}
    response = api.post("/policy/rules", {**body, "revision": engine_of(app).revision})
    assert response.status_code == 201
    assert response.json["warnings"] == [f"dave@example.com: {NO_ACCOUNT}"]


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        ("/policy/roles", {"member": "Dave@Example.com", "role": "admin"}, "member"),
        ("/policy/roles", {"member": " dave@example.com", "role": "admin"}, "member"),
        (
            "/policy/rules",
            {"subject": "Dave@Example.com", "path": "/", "methods": "GET"},
            "subject",
        ),
        (
            "/policy/rules",
            {"subject": "dave@example.com ", "path": "/", "methods": "GET"},
            "subject",
        ),
    ],
)
def test_an_email_in_another_spelling_is_refused_with_the_fix(
    app: Flask, api: Api, endpoint: str, body: dict[str, str], field: str
) -> None:
    with unchanged(app):
        response = api.post(endpoint, {**body, "revision": engine_of(app).revision})
    assert response.status_code == 400
    assert response.json["errors"] == [{"field": field, "message": "write it as dave@example.com"}]


@pytest.mark.parametrize(
    ("path", "methods", "warning"),
    [
        ("/*", ".*", "gives anonymous visitors every request"),
        ("/reports", "GET|", "'GET|' matches every method"),
        ("*", "GET", "'*' matches every path"),
    ],
)
def test_a_risky_rule_is_added_with_warnings(
    app: Flask, api: Api, path: str, methods: str, warning: str
) -> None:
    body = {"subject": "anonymous", "path": path, "methods": methods}
    response = api.post("/policy/rules", {**body, "revision": engine_of(app).revision})
    assert response.status_code == 201
    assert any(warning in w for w in response.json["warnings"])
    # Replacing it with a narrow rule: no warnings.
    rule_id = response.json["rule"]["id"]
    narrow = {**body, "path": "/reports", "methods": "GET", "revision": response.json["revision"]}
    replaced = api.put(f"/policy/rules/{rule_id}", narrow)
    assert replaced.status_code == 200 and replaced.json["warnings"] == []


@pytest.mark.parametrize("subject", ["USER@Example.COM", " user@example.com"])
def test_a_decision_for_an_email_in_another_spelling_is_refused(
    app: Flask, api: Api, subject: str
) -> None:
    response = api.post("/decisions", {"subject": subject, "path": "/", "method": "GET"})
    assert response.status_code == 400
    assert response.json["errors"] == [
        {"field": "subject", "message": "write it as user@example.com"}
    ]
    batch = api.post(
        "/decisions/batch", {"requests": [{"subject": subject, "path": "/", "method": "GET"}]}
    )
    assert batch.status_code == 400
    assert batch.json["errors"][0]["field"] == "requests[0].subject"
