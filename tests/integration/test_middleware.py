"""Every request is decided by the engine: each branch of the middleware on its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authz import Change
from authz import Rule
from service import create_app
from service.extensions import db
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import Backend
from tests.conftest import app_config
from tests.conftest import dispose


def engine(app: Flask):  # noqa: ANN201 - test helper
    return app.extensions["authz"]


def add(app: Flask, *rules: Rule) -> None:
    engine(app).apply(Change.adding(*rules), actor="test", source="cli")


def remove(app: Flask, *rules: Rule) -> None:
    engine(app).apply(Change.removing(*rules), actor="test", source="cli")


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/", "/login?next=/"),
        ("/admin/", "/login?next=/admin/"),
        ("/admin/?tab=rules&x=1", "/login?next=/admin/?tab%3Drules%26x%3D1"),
        ("/no/such/page", "/login?next=/no/such/page"),
    ],
)
def test_anonymous_page_request_redirects_to_login_with_next(
    client: FlaskClient, path: str, location: str
) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == location


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/v1/policy", {}),
        ("/api/v1/decisions", {"Accept": "text/html"}),
        ("/", {"Accept": "application/json"}),
    ],
)
def test_anonymous_api_request_gets_401_problem_json(
    client: FlaskClient, path: str, headers: dict[str, str]
) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.json is not None and response.json["status"] == 401


def test_user_refused_gets_403_page(client: FlaskClient, auth: AuthActions) -> None:
    auth.login()
    response = client.get("/admin/")
    assert response.status_code == 403
    assert response.mimetype == "text/html"
    assert "may not GET /admin/" in response.get_data(as_text=True)


def test_user_refused_on_api_gets_403_problem_json(client: FlaskClient, auth: AuthActions) -> None:
    auth.login()
    response = client.get("/api/v1/policy")
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert "user@example.com" in response.json["detail"]


@pytest.mark.parametrize(
    ("path_info", "raw"),
    [
        ("/a/../admin/", "/a/../admin/"),
        ("/./admin/", "/./admin/"),
        ("/admin/..", "/admin/.."),
        ("//admin/", "//admin/"),
        ("/admin\\x", "/admin%5Cx"),
        ("/admin/x", "/admin%2Fx"),
        ("/admin/x", "/admin%2fx"),
        ("/admin/../x", "/admin/%2e%2e/x"),
        ("/a\x00b", "/a%00b"),
        ("/a\nb", "/a%0Ab"),
    ],
)
def test_ambiguous_paths_are_refused_with_400_before_any_decision(
    client: FlaskClient, auth: AuthActions, path_info: str, raw: str
) -> None:
    auth.login()
    response = client.get(
        "/", environ_overrides={"PATH_INFO": path_info, "REQUEST_URI": raw, "RAW_URI": raw}
    )
    assert response.status_code == 400
    assert "Refused request" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("path_info", "raw"),
    [("/login\xc0\xaf", "/login%C0%AF"), ("/login\xff", "/login%FF")],
)
def test_escapes_that_are_not_utf8_are_refused_with_400(
    client: FlaskClient, path_info: str, raw: str
) -> None:
    """The router and the policy would read U+FFFD: one path, several wire spellings."""
    response = client.get(
        "/", environ_overrides={"PATH_INFO": path_info, "REQUEST_URI": raw, "RAW_URI": raw}
    )
    assert response.status_code == 400


def test_raw_bytes_that_are_not_utf8_are_refused_with_400(client: FlaskClient) -> None:
    """``GET /login\\xff`` sent as a raw byte (no escape): WSGI hands it over as latin-1."""
    raw = "/login\xff"
    response = client.get(
        "/", environ_overrides={"PATH_INFO": raw, "REQUEST_URI": raw, "RAW_URI": raw}
    )
    assert response.status_code == 400


def test_static_files_reachable_by_anonymous_through_a_policy_row(app: Flask) -> None:
    client = app.test_client()
    with client.get("/static/style.css") as response:
        assert response.status_code == 200
        assert b"font-family" in response.data
    # No code exemption: take the row away and the static file is refused too.
    remove(app, Rule.of("p", "anonymous", "/static/*", "GET", "allow"))
    assert client.get("/static/style.css").status_code == 302


def test_login_page_open_only_by_policy_row(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/login").status_code == 200
    remove(app, Rule.of("p", "anonymous", "/login", "GET|POST", "allow"))
    assert client.get("/login").status_code == 302


def test_policy_change_is_visible_on_the_next_request(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.login()
    assert client.get("/reports/7").status_code == 403
    rule = Rule.of("p", "user", "/reports/:id", "GET", "allow")
    add(app, rule)
    assert client.get("/reports/7").status_code == 404  # allowed; the route does not exist
    remove(app, rule)
    assert client.get("/reports/7").status_code == 403


def test_deny_row_overrides_allow_row(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.login()
    assert client.get("/").status_code == 200
    add(app, Rule.of("p", USER, "/", "GET", "deny"))
    assert client.get("/").status_code == 403


def test_head_is_checked_as_get(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.login()
    assert client.head("/").status_code == 200
    add(app, Rule.of("p", USER, "/", "GET", "deny"))
    assert client.head("/").status_code == 403


def test_method_is_part_of_the_decision(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.login()
    assert client.delete("/").status_code == 403  # only GET is granted on /


def test_decision_makes_no_database_query(app: Flask, client: FlaskClient) -> None:
    from sqlalchemy import event

    statements: list[str] = []
    with app.app_context():
        sa_engine = db.engine

    def count(_conn, _cursor, statement, *_args):  # noqa: ANN001, ANN202
        statements.append(statement)

    event.listen(sa_engine, "before_cursor_execute", count)
    try:
        with client.get("/static/style.css") as response:
            assert response.status_code == 200
        assert client.get("/admin/").status_code == 302
    finally:
        event.remove(sa_engine, "before_cursor_execute", count)
    assert statements == []


def test_503_when_the_database_is_unreachable_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "authz.db"
    app = create_app(app_config(tmp_path, database_url=f"sqlite:///{missing}"))
    try:
        client = app.test_client()
        for path in ("/", "/login", "/static/style.css"):
            with client.get(path) as response:
                assert response.status_code == 503, path
                assert response.headers["Retry-After"]
        assert client.get("/api/v1/x").mimetype == "application/problem+json"
    finally:
        dispose(app)


def test_503_when_the_database_goes_away_for_a_logged_in_user(
    app: Flask, client: FlaskClient, auth: AuthActions, tmp_path: Path, database: Backend
) -> None:
    auth.login()
    assert client.get("/").status_code == 200
    dispose(app)
    database.destroy(tmp_path)  # the user table is gone: the user cannot be loaded
    response = client.get("/")
    assert response.status_code == 503
    assert client.get("/admin/").status_code == 503


def test_503_when_the_engine_cannot_decide(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.login()

    def broken(*_request: str) -> None:
        raise RuntimeError("matcher exploded")

    engine(app).snapshot.fast = broken
    assert client.get("/").status_code == 503


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/" + "a" * 2100, 414),
        ("/a" * 65, 414),
        ("/a" * 60, 302),  # within the caps: decided (anonymous, so the login redirect)
    ],
)
def test_long_paths_are_refused_before_any_pattern(
    client: FlaskClient, path: str, status: int
) -> None:
    """Path length and segment count are capped before the engine sees the path."""
    assert client.get(path).status_code == status


@pytest.mark.parametrize(
    ("method", "status"),
    [
        ("AAAAAAAAAAAAAAAAAAAAAAAAAAA!", 400),  # the method that froze every worker
        ("A" * 33, 414),
        ("GET\x00", 400),
        ("PRO PFIND", 400),
    ],
)
def test_crafted_methods_are_refused_before_any_pattern(
    app: Flask, client: FlaskClient, method: str, status: int
) -> None:
    """A method that is not a plain HTTP method name never reaches a pattern."""
    add(app, Rule.of("p", "anonymous", "/redos", ".*", "allow"))
    assert client.open("/redos", method=method).status_code == status


def test_a_request_at_the_caps_is_decided_not_refused(app: Flask, client: FlaskClient) -> None:
    """The caps refuse only what is over them: a long, deep path under them is decided."""
    add(app, Rule.of("p", "anonymous", "/deep/*", "GET", "allow"))
    path = "/deep" + "/x" * 62
    assert client.get(path).status_code == 404  # allowed by the row; no route serves it
