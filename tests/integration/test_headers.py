"""Security headers on every response: every GET route as admin, user and visitor, errors,
redirects, static files, 503; no-store on everything but static files; HSTS in production."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from service import create_app
from service.headers import CONTENT_SECURITY_POLICY
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import app_config
from tests.conftest import dispose
from tests.conftest import make_app

EXPECTED = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def check(response: TestResponse, path: str, *, static: bool = False) -> None:
    """Assert the security headers of one response."""
    where = f"{path} ({response.status_code})"
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, f"{name} on {where}"
    assert "Strict-Transport-Security" not in response.headers, where  # not in testing
    if static:
        assert response.headers.get("Cache-Control") != "no-store", where
    else:
        assert response.headers.get("Cache-Control") == "no-store", where


def get_paths(app: Flask) -> list[str]:
    """One URL per GET route of the app, with real values for its arguments."""
    rule_id = app.extensions["authz"].rules()[0].id
    samples = {
        "email": USER,
        "subject": USER,
        "role": "user",
        "rule_id": rule_id,
        "test_id": rule_id,  # a policy test of that id: none (404)
        "filename": "style.css",
        "token": "not-a-valid-token",  # verification, reset and invitation links
        "name": "nobody",  # a service token (none of that name: 404)
    }
    paths = []
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()):
            continue
        values = {name: samples[name] for name in rule.arguments}
        paths.append(rule.build(values, append_unknown=False)[1])  # type: ignore[index]
    # Not routed, wrong arguments, or refused before routing: errors carry them too.
    paths += ["/nowhere", "/admin/users/ghost@example.com", "/admin/rules/0000000000000000/edit"]
    paths += ["/a/%2e%2e/admin", "/api/v1/nowhere"]
    return paths


@pytest.fixture
def clients(app: Flask) -> Iterator[dict[str, FlaskClient]]:
    admin = app.test_client()
    assert AuthActions(admin).login(ADMIN, ADMIN_PASSWORD).status_code == 302
    user = app.test_client()
    assert AuthActions(user).login().status_code == 302
    yield {"admin": admin, "user": user, "anonymous": app.test_client()}


@pytest.mark.parametrize("who", ["admin", "user", "anonymous"])
def test_every_get_route_carries_the_headers(
    app: Flask, clients: dict[str, FlaskClient], who: str
) -> None:
    client = clients[who]
    statuses = set()
    for path in get_paths(app):
        response = client.get(path)
        statuses.add(response.status_code)
        check(response, path, static=path.startswith("/static/") and response.status_code == 200)
        response.close()
    # The walk saw successes and refusals alike: 404 for the admin, 403 for the user, a
    # redirect to the login page for the visitor.
    refusal = {"admin": 404, "user": 403, "anonymous": 302}[who]
    assert {200, 400, refusal} <= statuses


def test_form_posts_api_answers_and_bad_requests_carry_them(
    app: Flask, clients: dict[str, FlaskClient]
) -> None:
    anonymous = clients["anonymous"]
    for response, path in (
        (anonymous.post("/login", data={}), "POST /login"),  # 400: no CSRF token
        (AuthActions(app.test_client()).login(USER, "wrong-password-1"), "wrong password"),
        (anonymous.get("/api/v1/users"), "API 401"),
        (clients["user"].get("/api/v1/users"), "API 403"),
        (clients["admin"].get("/api/v1/users"), "API 200"),
        (clients["admin"].post("/api/v1/decisions", json={}), "API POST"),
        (anonymous.get("/static/nothing.css"), "static 404"),
        (anonymous.get("/admin/%00"), "NUL"),
    ):
        check(response, path)


def test_a_503_carries_them(tmp_path: Path) -> None:
    app = create_app(app_config(tmp_path))  # no `db init`: every request answers 503
    try:
        response = app.test_client().get("/login")
        assert response.status_code == 503
        check(response, "/login")
    finally:
        dispose(app)


def test_a_throttled_login_carries_them(tmp_path: Path) -> None:
    app = make_app(tmp_path, login_max_failures=1)
    try:
        auth = AuthActions(app.test_client())
        auth.login(USER, "wrong-password-1")
        response = auth.login(USER, "wrong-password-1")
        assert response.status_code == 429
        check(response, "throttled")
    finally:
        dispose(app)


def test_hsts_in_production_only(tmp_path: Path) -> None:
    app = make_app(tmp_path, env="production", secret_key="x" * 40)
    try:
        response = app.test_client().get("/login", base_url="https://localhost")
        assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        static = app.test_client().get("/static/style.css", base_url="https://localhost")
        assert "Strict-Transport-Security" in static.headers
        static.close()
    finally:
        dispose(app)


def test_templates_hold_no_inline_script_or_style() -> None:
    """The CSP refuses inline script and style: none may be left in a template."""
    root = Path(__file__).resolve().parents[2] / "service" / "templates"
    for template in root.rglob("*.html"):
        text = template.read_text(encoding="utf-8").lower()
        for needle in ("<script>", "<style", "style=", " onclick=", " onsubmit=", "javascript:"):
            assert needle not in text, f"{needle} in {template.name}"
