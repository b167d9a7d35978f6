"""The decision API: /check, /check/batch, subjects' roles and permissions, the decision log."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authz import Change
from authz import Rule
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import dispose
from tests.conftest import make_app
from tests.conftest import make_token
from tests.integration.test_spellings import OTHER_SPELLINGS
from tests.integration.test_spellings import Spelling

API = "/api/v1"
PROBLEM = "application/problem+json"
HOME = Rule.of("p", "user", "/", "GET", "allow")
EDITOR = Rule.of("p", "admin", "/admin/*", ".*", "allow")
PRIVATE_ALLOW = Rule.of("p", "user", "/private", ".*", "allow")
PRIVATE_DENY = Rule.of("p", "user", "/private", "GET", "deny")
CHECKER = Rule.of("p", "checker", "/api/v1/check*", "POST", "allow")
BATCH_CHECKER = Rule.of("p", "checker", "/api/v1/check/*", "POST", "allow")
RESULT_FIELDS = {"allowed", "reason", "rule", "rule_id", "decision_id"}


class Api:
    """A JSON client: a logged-in session (with CSRF) or a bearer token."""

    def __init__(self, client: FlaskClient, secret: str | None = None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        if secret is None:
            token = client.get(f"{API}/csrf").json["csrf_token"]  # type: ignore[index]
            self.headers = {"X-CSRFToken": token}

    def get(self, path: str) -> TestResponse:
        return self.client.get(f"{API}{path}", headers=self.headers)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> TestResponse:
        if body is not None:
            kwargs["json"] = body
        return self.client.post(f"{API}{path}", headers=self.headers, **kwargs)


@pytest.fixture
def api(app: Flask, client: FlaskClient, auth: AuthActions) -> Api:
    """The API as the admin; the policy also has an allow and a deny row for /private."""
    app.extensions["authz"].apply(
        Change.adding(PRIVATE_ALLOW, PRIVATE_DENY), actor="test", source="cli"
    )
    auth.login(ADMIN, ADMIN_PASSWORD)
    return Api(client)


def revision(app: Flask) -> int:
    return int(app.extensions["authz"].revision)


def check(subject: str, path: str, method: str = "GET") -> dict[str, str]:
    return {"subject": subject, "path": path, "method": method}


def errors(response: TestResponse, status: int = 400) -> list[str | None]:
    """The fields a problem names (asserting its status and type)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    return [e["field"] for e in response.json.get("errors", [])]  # type: ignore[union-attr]


# -- /check ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "path", "method", "allowed", "reason", "rule"),
    [
        (USER, "/", "GET", True, "allow-rule", HOME),
        (USER, "/", "HEAD", True, "allow-rule", HOME),
        (USER, "/admin/", "GET", False, "no-match", None),
        ("admin", "/admin/users", "POST", True, "allow-rule", EDITOR),
        (ADMIN, "/private", "GET", False, "deny-rule", PRIVATE_DENY),
        (USER, "/private", "POST", True, "allow-rule", PRIVATE_ALLOW),
        ("anonymous", "/", "GET", False, "no-match", None),
    ],
)
def test_a_check_answers_with_the_rule_revision_and_a_decision_id(
    app: Flask,
    api: Api,
    subject: str,
    path: str,
    method: str,
    allowed: bool,
    reason: str,
    rule: Rule | None,
) -> None:
    response = api.post("/check", check(subject, path, method))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert set(body) == RESULT_FIELDS | {"revision"}
    assert (body["allowed"], body["reason"]) == (allowed, reason)
    assert body["rule"] == (rule.as_list() if rule else None)
    assert body["rule_id"] == (rule.id if rule else None)
    assert body["revision"] == revision(app)
    assert isinstance(body["decision_id"], str) and body["decision_id"]


@pytest.mark.parametrize("path", ["/", "/admin/", "/admin/rules", f"{API}/users", "/private"])
def test_a_check_agrees_with_the_middleware(app: Flask, api: Api, path: str) -> None:
    answer = api.post("/check", check(USER, path)).json
    other = app.test_client()
    AuthActions(other).login()
    assert answer["allowed"] is (other.get(path).status_code != 403)


def test_a_batch_is_answered_in_order_on_one_revision(app: Flask, api: Api) -> None:
    checks = [
        check(USER, "/"),
        check(USER, "/admin/"),
        check(ADMIN, "/admin/", "HEAD"),
        check(ADMIN, "/private"),
        check("anonymous", "/login", "POST"),
    ]
    response = api.post("/check/batch", {"checks": checks})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert set(body) == {"revision", "results"} and body["revision"] == revision(app)
    assert [r["allowed"] for r in body["results"]] == [True, False, True, False, True]
    assert [r["reason"] for r in body["results"]] == [
        "allow-rule",
        "no-match",
        "allow-rule",
        "deny-rule",
        "allow-rule",
    ]
    assert all(set(r) == RESULT_FIELDS for r in body["results"])
    ids = [r["decision_id"] for r in body["results"]]
    assert len(set(ids)) == len(ids)
    # Each answer is the single check's answer.
    for one, result in zip(checks, body["results"], strict=True):
        single = api.post("/check", one).json
        assert {k: single[k] for k in ("allowed", "reason", "rule", "rule_id")} == {
            k: result[k] for k in ("allowed", "reason", "rule", "rule_id")
        }


def test_a_batch_holds_1000_checks_not_1001_and_not_none(api: Api) -> None:
    one = check(USER, "/")
    full = api.post("/check/batch", {"checks": [one] * 1000})
    assert full.status_code == 200 and len(full.json["results"]) == 1000
    assert errors(api.post("/check/batch", {"checks": [one] * 1001}), 422) == ["checks"]
    assert errors(api.post("/check/batch", {"checks": []})) == ["checks"]


def test_the_decisions_endpoints_keep_their_shapes(app: Flask, api: Api) -> None:
    one = api.post("/decisions", check(USER, "/")).json
    assert set(one) == {
        "allowed",
        "reason",
        "subject",
        "object",
        "action",
        "rule",
        "explain",
        "revision",
    }
    many = api.post("/decisions/batch", {"requests": [check(USER, "/")]}).json
    assert set(many) == {"revision", "decisions"} and many["decisions"][0]["allowed"] is True
    assert api.post("/decisions/batch", {"requests": []}).json["decisions"] == []
    big = api.post("/decisions/batch", {"requests": [check(USER, "/")] * 1001})
    assert errors(big) == ["requests"]


# -- refused input: always a 4xx problem naming the field, never a 500 ----------------------

LONG = "/" + "a" * 3000


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"path": "/a/%2e%2e/admin"}, "path", "percent-escapes"),
        ({"path": "/a/%2E%2e/admin"}, "path", "percent-escapes"),
        ({"path": "/%2fadmin"}, "path", "percent-escapes"),
        ({"path": "/a%5cb"}, "path", "percent-escapes"),
        ({"path": "/a%00"}, "path", "percent-escapes"),
        ({"path": "/%c0%af"}, "path", "percent-escapes"),
        ({"path": "/reports/%73ecret"}, "path", "percent-escapes"),
        ({"path": "/reports/secret?x=1"}, "path", "query"),
        ({"path": "/reports/secret#x"}, "path", "fragment"),
        ({"path": "/a/../admin/"}, "path", "dot segment"),
        ({"path": "/a/./b"}, "path", "dot segment"),
        ({"path": "//admin/"}, "path", "empty segment"),
        ({"path": "/admin//x"}, "path", "empty segment"),
        ({"path": "/a\\b"}, "path", "backslash"),
        ({"path": "\\admin"}, "path", "start with"),
        ({"path": "/a\x00b"}, "path", "control"),
        ({"path": "/a\nb"}, "path", "control"),
        ({"path": "/\ud800"}, "path", "UTF-8"),
        ({"path": "admin/"}, "path", "start with"),
        ({"path": ""}, "path", "start with"),
        ({"path": LONG}, "path", "414"),
        ({"path": "/a" * 65}, "path", "segments"),
        ({"method": "GET\r\n"}, "method", "HTTP method"),
        ({"method": "G ET"}, "method", "HTTP method"),
        ({"method": ""}, "method", "HTTP method"),
        ({"method": "G.ET"}, "method", "HTTP method"),
        ({"method": "X" * 3000}, "method", "at most 32"),
        ({"subject": "USER@Example.com"}, "subject", f"write it as {USER}"),
        ({"subject": f" {USER}"}, "subject", f"write it as {USER}"),
        ({"subject": f"{USER}\x00"}, "subject", "must not contain control characters"),
        ({"subject": "Admin"}, "subject", "write it as admin"),
        ({"subject": "TOKEN:ci"}, "subject", "write it as token:ci"),
        ({"subject": "token:"}, "subject", "must be an email"),
        ({"subject": "a b"}, "subject", "must be an email"),
        ({"subject": ""}, "subject", "1 to 255"),
        ({"subject": "a" * 3000}, "subject", "1 to 255"),
        ({"subject": None}, "subject", "string"),
        ({"subject": ["admin"]}, "subject", "string"),
        ({"path": {"a": 1}}, "path", "string"),
        ({"method": 1}, "method", "string"),
        ({"explain": True}, "explain", "not a known field"),
    ],
)
def test_a_refused_check_names_the_field(
    app: Flask, api: Api, change: dict[str, Any], field: str, message: str
) -> None:
    body = {**check(USER, "/"), **change}
    response = api.post("/check", body)
    assert errors(response) == [field]
    assert message in response.json["errors"][0]["message"]
    # In a batch, the item is named; none of the batch is decided.
    batch = api.post("/check/batch", {"checks": [check(USER, "/")] * 3 + [body]})
    assert errors(batch) == [f"checks[3].{field}"]


def test_every_bad_field_is_named_at_once(api: Api) -> None:
    response = api.post("/check", {"subject": "", "path": "x", "method": "?"})
    assert errors(response) == ["subject", "path", "method"]
    assert errors(api.post("/check", {"subject": USER, "path": "/"})) == ["method"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"checks": [check(USER, "/"), "/"]}, ["checks[1]"]),
        ({"checks": [check(USER, "/"), [USER, "/", "GET"]]}, ["checks[1]"]),
        ({"checks": [check(USER, "/"), {"subject": USER}]}, ["checks[1].path", "checks[1].method"]),
        ({"checks": {"subject": USER}}, ["checks"]),
        ({"checks": None}, ["checks"]),
        ({}, ["checks"]),
        ({"checks": [check(USER, "/")], "fast": True}, ["fast"]),
        ([check(USER, "/")], [None]),
        ("checks", [None]),
    ],
)
def test_a_malformed_batch_is_refused(api: Api, body: Any, fields: list[str | None]) -> None:
    assert errors(api.post("/check/batch", body)) == fields


@pytest.mark.parametrize("endpoint", ["/check", "/check/batch", "/decisions", "/decisions/batch"])
@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("[" * 10_000, "application/json"),
        ('{"checks": ' + "[" * 5_000 + "]" * 5_000 + "}", "application/json"),
        ("{" * 3000 + "}" * 3000, "application/json"),
        ('{"subject": "a", "path": "/"', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        ("1" * 5000, "application/json"),
        ("subject=a&path=/&method=GET", "application/x-www-form-urlencoded"),
        ('{"subject": "user@example.com", "path": "/", "method": "GET"}', "text/plain"),
        ("", "application/json"),
        ([check(USER, "/")], "application/json"),
    ],
)
def test_garbage_bodies_are_400_problems(
    api: Api, endpoint: str, data: Any, content_type: str
) -> None:
    if isinstance(data, list):
        data, content_type = json.dumps(data), "application/json"
    response = api.post(endpoint, data=data, content_type=content_type)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.mimetype == PROBLEM


@pytest.mark.parametrize("endpoint", ["/check", "/check/batch", "/decisions/batch"])
def test_a_20_mb_body_is_refused_with_413(api: Api, endpoint: str) -> None:
    one = json.dumps(check(USER, "/" + "a" * 2000))
    data = '{"checks": [' + ",".join([one] * 10_000) + "]}"
    assert len(data) > 20_000_000
    response = api.post(endpoint, data=data, content_type="application/json")
    assert response.status_code == 413, response.get_data(as_text=True)[:300]
    assert response.mimetype == PROBLEM


def test_a_body_without_a_length_is_capped_too(api: Api) -> None:
    """Chunked bodies carry no Content-Length: the cap holds while reading."""
    data = b'{"checks": [' + b",".join([json.dumps(check(USER, "/")).encode()] * 200_000) + b"]}"
    response = api.client.post(
        f"{API}/check/batch",
        input_stream=io.BytesIO(data),
        headers={**api.headers, "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413, response.get_data(as_text=True)[:300]


def test_a_batch_of_1000_longest_checks_fits_the_limit(api: Api) -> None:
    longest = check("a" * 255, "/" + "a" * 2047, "X" * 32)
    response = api.post("/check/batch", {"checks": [longest] * 1000})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.json["results"][0]["allowed"] is False


# -- who may ask: policy rows ---------------------------------------------------------------


def test_a_token_may_check_only_with_a_role_granted_the_check_api(app: Flask) -> None:
    engine = app.extensions["authz"]
    engine.apply(Change.adding(CHECKER), actor="test", source="cli")
    checker = Api(app.test_client(), make_token(app, "checker", ("checker",)))
    other = Api(app.test_client(), make_token(app, "reader", ("user",)))
    one = check(USER, "/")
    assert checker.post("/check", one).status_code == 200
    # keyMatch2 reads "*" as "any path below" only after a "/": "/api/v1/check*" is the
    # single check; the batch needs its own row.
    assert checker.post("/check/batch", {"checks": [one]}).status_code == 403
    engine.apply(Change.adding(BATCH_CHECKER), actor="test", source="cli")
    batch = checker.post("/check/batch", {"checks": [one]})
    assert batch.status_code == 200, batch.get_data(as_text=True)
    assert errors(other.post("/check", one), 403) == []
    assert errors(other.post("/check/batch", {"checks": [one]}), 403) == []
    # The check API does not open the rest of the API.
    assert checker.get("/users").status_code == 403
    assert checker.post("/decisions", one).status_code == 403
    assert checker.get(f"/subjects/{USER}/roles").status_code == 403


def test_an_anonymous_caller_gets_401(app: Flask) -> None:
    client = app.test_client()
    response = client.post(f"{API}/check", json=check(USER, "/"))
    assert response.status_code == 401 and response.mimetype == PROBLEM


def test_a_session_caller_needs_the_csrf_token(app: Flask, api: Api) -> None:
    response = api.client.post(f"{API}/check", json=check(USER, "/"))
    assert response.status_code == 400


# -- subjects ------------------------------------------------------------------------------


def test_roles_of_each_kind_of_subject(app: Flask, api: Api) -> None:
    make_token(app, "ci", ("admin",))
    expected = {
        USER: (["user"], ["anonymous", "user"]),
        ADMIN: (["admin"], ["admin", "anonymous", "user"]),
        "admin": (["user"], ["anonymous", "user"]),
        "anonymous": ([], []),
        "token:ci": (["admin"], ["admin", "anonymous", "user"]),
        "nobody@example.com": ([], []),
    }
    for subject, (direct, roles) in expected.items():
        response = api.get(f"/subjects/{subject}/roles")
        assert response.status_code == 200, (subject, response.get_data(as_text=True))
        assert response.json == {
            "subject": subject,
            "revision": revision(app),
            "direct": direct,
            "roles": roles,
        }


def test_permissions_are_the_subjects_rules_and_its_roles(app: Flask, api: Api) -> None:
    own = Rule.of("p", USER, "/mine", "GET", "allow")
    app.extensions["authz"].apply(Change.adding(own), actor="test", source="cli")
    response = api.get(f"/subjects/{USER}/permissions")
    assert response.status_code == 200
    body = response.json
    assert body["subject"] == USER and body["revision"] == revision(app)
    subjects = {item["subject"] for item in body["items"]}
    assert subjects == {USER, "user", "anonymous"}
    items = {item["id"]: item for item in body["items"]}
    assert items[own.id] == {
        "id": own.id,
        "subject": USER,
        "path": "/mine",
        "methods": "GET",
        "effect": "allow",
    }
    assert items[PRIVATE_DENY.id]["effect"] == "deny"
    assert EDITOR.id not in items
    # In policy order, as /policy/rules lists them.
    listed = [r["id"] for r in api.get("/policy/rules?per_page=200").json["items"]]
    assert [i for i in listed if i in items] == list(items)
    admin_items = api.get("/subjects/admin/permissions").json["items"]
    assert EDITOR.id in {i["id"] for i in admin_items}
    assert api.get("/subjects/anonymous/permissions").json["items"][0]["subject"] == "anonymous"


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ("USER@Example.COM", f"write it as {USER}"),
        ("%20user@example.com", f"write it as {USER}"),
        ("Admin", "write it as admin"),
        ("TOKEN:ci", "write it as token:ci"),
        ("a%20b", "must be an email"),
        ("token:", "must be an email"),
        ("a" * 300, "1 to 255"),
    ],
)
@pytest.mark.parametrize("what", ["roles", "permissions"])
def test_a_subject_in_another_spelling_is_refused(
    api: Api, subject: str, message: str, what: str
) -> None:
    response = api.get(f"/subjects/{subject}/{what}")
    assert errors(response) == ["subject"]
    assert message in response.json["errors"][0]["message"]


@pytest.mark.parametrize("spelling", OTHER_SPELLINGS, ids=lambda s: s.name)
def test_no_other_spelling_of_a_subject_escapes_a_deny_row(
    app: Flask, api: Api, spelling: Spelling
) -> None:
    """A helpdesk denied the target's subject pages gets 403 there, and 400 or 404 (never
    the answer) for every other spelling of the target, which its wildcard allows."""
    target = "kofi.boss@example.com"
    app.extensions["authz"].apply(
        Change.adding(
            Rule.of("g", target, "fiskal"),
            Rule.of("p", "fiskal", "/fiskal", "GET", "allow"),
            Rule.of("p", "helpdesk", "/api/v1/*", ".*", "allow"),
            Rule.of("p", "helpdesk", f"/api/v1/subjects/{target}/*", ".*", "deny"),
        ),
        actor="test",
        source="cli",
    )
    helpdesk = Api(app.test_client(), make_token(app, "helpdesk", ("helpdesk",)))
    spelled = spelling.spell(target)
    assert spelled is not None and spelled != target
    for what in ("roles", "permissions"):
        assert helpdesk.get(f"/subjects/{target}/{what}").status_code == 403
        assert api.get(f"/subjects/{target}/{what}").json["subject"] == target
        for caller in (helpdesk, api):
            response = caller.get(f"/subjects/{spelled}/{what}")
            assert response.status_code in (400, 404), (caller, spelled, response.status_code)
            assert target not in response.get_data(as_text=True) or "write it as" in (
                response.get_data(as_text=True)
            )


@pytest.mark.parametrize(
    "path", ["/subjects/a%2fb/roles", "/subjects/%2e%2e/roles", "/subjects/a%00/roles"]
)
def test_subject_paths_the_router_could_read_twice_are_refused(api: Api, path: str) -> None:
    response = api.get(path)
    assert 400 <= response.status_code < 500


# -- the decision log ----------------------------------------------------------------------


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return tmp_path / "decisions.jsonl"


def logged(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def logging_app(tmp_path: Path, log_file: Path, request: pytest.FixtureRequest) -> Iterator[Flask]:
    overrides = getattr(request, "param", {})
    (tmp_path / "logged").mkdir()
    settings = {"decision_log": "full", "decision_log_file": str(log_file), **overrides}
    app = make_app(tmp_path / "logged", **settings)
    yield app
    dispose(app)


def test_each_check_is_logged_with_the_answers_id_and_the_caller(
    logging_app: Flask, log_file: Path
) -> None:
    client = logging_app.test_client()
    AuthActions(client).login(ADMIN, ADMIN_PASSWORD)
    api = Api(client)
    one = api.post("/check", check(USER, "/")).json
    batch = api.post("/check/batch", {"checks": [check(USER, "/admin/"), check("admin", "/")]})
    secret = make_token(logging_app, "ci", ("admin",))
    by_token = Api(logging_app.test_client(), secret).post("/check", check(USER, "/")).json
    lines = logged(log_file)
    assert len(lines) == 4  # the middleware's own decisions are not logged by default
    ids = [one["decision_id"], *(r["decision_id"] for r in batch.json["results"])]
    ids.append(by_token["decision_id"])
    assert [line["decision_id"] for line in lines] == ids
    assert lines[0] == {
        "decision_id": one["decision_id"],
        "time": lines[0]["time"],
        "subject": USER,
        "object": "/",
        "action": "GET",
        "allowed": True,
        "rule": HOME.as_list(),
        "revision": one["revision"],
        "caller": ADMIN,
    }
    assert lines[1]["allowed"] is False and lines[1]["rule"] is None
    assert [line["caller"] for line in lines] == [ADMIN, ADMIN, ADMIN, "token:ci"]


@pytest.mark.parametrize("logging_app", [{"decision_log_middleware": True}], indirect=True)
def test_the_middlewares_decisions_are_logged_when_asked(
    logging_app: Flask, log_file: Path
) -> None:
    client = logging_app.test_client()
    AuthActions(client).login()
    client.get("/")
    client.get("/admin/")
    lines = [line for line in logged(log_file) if line["caller"] == "middleware"]
    home = [line for line in lines if line["object"] == "/" and line["subject"] == USER]
    assert home and home[-1]["allowed"] is True and home[-1]["rule"] == HOME.as_list()
    admin = [line for line in lines if line["object"] == "/admin/"]
    assert admin and admin[-1]["allowed"] is False and admin[-1]["subject"] == USER
    assert all(line["revision"] == revision(logging_app) for line in lines[-2:])


def test_nothing_is_logged_when_the_log_is_off(
    tmp_path: Path, log_file: Path, api: Api, app: Flask
) -> None:
    assert not app.extensions["authz.decisions"].enabled
    assert api.post("/check", check(USER, "/")).status_code == 200
    assert not log_file.exists()


@pytest.mark.parametrize(
    "logging_app", [{"decision_log": "sample", "decision_log_sample": 0.5}], indirect=True
)
def test_a_sampled_log_has_some_decisions(logging_app: Flask, log_file: Path) -> None:
    client = logging_app.test_client()
    AuthActions(client).login(ADMIN, ADMIN_PASSWORD)
    response = Api(client).post("/check/batch", {"checks": [check(USER, "/")] * 400})
    ids = {r["decision_id"] for r in response.json["results"]}
    lines = logged(log_file)
    assert 0 < len(lines) < 400
    assert {line["decision_id"] for line in lines} <= ids
