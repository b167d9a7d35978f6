"""Login, registration, logout and sessions through the real forms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service import users
from tests.conftest import ADMIN
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import app_config
from tests.conftest import csrf_token
from tests.conftest import dispose
from tests.conftest import make_app


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def replay(app: Flask, cookie: str) -> int:
    """Send a request to / with a copied session cookie; return the status."""
    other = app.test_client()
    other.set_cookie("session", cookie)
    return other.get("/").status_code


def test_login_renews_the_session(client: FlaskClient, auth: AuthActions) -> None:
    client.get("/login")
    before = session_cookie(client)
    assert auth.login().status_code == 302
    after = session_cookie(client)
    assert after != before
    assert replay(client.application, before) == 302  # the pre-login cookie is not logged in


@pytest.mark.parametrize(
    ("next_value", "location"),
    [
        ("/admin/", "/admin/"),  # a same-site target, even one the policy will refuse
        ("/reports?id=1", "/reports?id=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("http:/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("", "/"),
    ],
)
def test_next_only_redirects_within_this_site(
    auth: AuthActions, next_value: str, location: str
) -> None:
    response = auth.login(next=next_value)
    assert response.status_code == 302
    assert response.headers["Location"] == location


def test_wrong_password_and_unknown_email_get_the_same_answer(
    client: FlaskClient, auth: AuthActions
) -> None:
    wrong = auth.login(USER, "not-the-password")
    unknown = auth.login("nobody@example.com", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401

    def strip(html: str) -> str:
        html = re.sub(r'name="csrf_token"[^>]*>', "", html)
        return re.sub(r'value="[^"]*@example.com"', "", html)

    assert strip(wrong.get_data(as_text=True)) == strip(unknown.get_data(as_text=True))
    assert "Wrong email or password." in wrong.get_data(as_text=True)


def test_deactivated_account_cannot_log_in_and_gets_the_same_answer(
    app: Flask, auth: AuthActions
) -> None:
    with app.app_context():
        users.set_active(USER, False, actor="test", source="cli")
    response = auth.login()
    assert response.status_code == 401
    assert "Wrong email or password." in response.get_data(as_text=True)


def test_login_is_throttled_after_repeated_failures(app: Flask, auth: AuthActions) -> None:
    for _ in range(5):
        assert auth.login(USER, "wrong-password").status_code == 401
    # Even the right password is refused for now, and unknown accounts are treated alike.
    assert auth.login().status_code == 429
    for _ in range(5):
        auth.login("ghost@example.com", "wrong-password")
    assert auth.login("ghost@example.com", "whatever-pass").status_code == 429
    # Another account from another address is not affected.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.0.0.9"  # noqa: E702
    assert AuthActions(other).login(ADMIN, "admin-password-1").status_code == 302


def test_csrf_is_required_for_login(client: FlaskClient) -> None:
    response = client.post("/login", data={"email": USER, "password": USER_PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302  # not logged in


def test_logout_requires_post_with_csrf(client: FlaskClient, auth: AuthActions) -> None:
    auth.login()
    # A GET only shows a confirmation form.
    response = client.get("/logout")
    assert response.status_code == 200 and "Log out?" in response.get_data(as_text=True)
    assert client.get("/").status_code == 200
    # A cross-site POST has no token: refused, still logged in.
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200
    assert auth.logout().status_code == 302
    assert client.get("/").status_code == 302


def test_session_is_dead_after_logout(client: FlaskClient, auth: AuthActions) -> None:
    auth.login()
    stolen = session_cookie(client)
    assert replay(client.application, stolen) == 200
    auth.logout()
    assert replay(client.application, stolen) == 302


def test_session_is_dead_after_password_change(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.login()
    assert client.get("/").status_code == 200
    with app.app_context():
        users.set_password(USER, "a-brand-new-password", actor="test", source="cli")
    assert client.get("/").status_code == 302
    assert auth.login(USER, USER_PASSWORD).status_code == 401
    assert auth.login(USER, "a-brand-new-password").status_code == 302


def test_deactivated_user_is_anonymous_at_once(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.login()
    assert client.get("/").status_code == 200
    with app.app_context():
        users.set_active(USER, False, actor="test", source="cli")
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    with app.app_context():
        users.set_active(USER, True, actor="test", source="cli")
    # Reactivation does not revive the old session.
    assert client.get("/").status_code == 302


def test_register_gives_the_default_role(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    response = auth.register("Fresh@Example.com", "long-enough-pw")
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    engine = app.extensions["authz"]
    assert "user" in engine.roles_for("fresh@example.com")
    entries = engine.store.audit_entries()
    assert entries[0].action == "user.register"
    assert entries[0].source == "web"
    assert [r.as_list() for r in entries[0].added] == [["g", "fresh@example.com", "user"]]


@pytest.mark.parametrize(
    ("email", "password", "confirm", "message"),
    [
        ("new@example.com", "long-enough-pw", "different-pw!!", "the passwords do not match"),
        ("new@example.com", "short", "short", "at least 10 characters"),
        ("not-an-email", "long-enough-pw", "long-enough-pw", "valid email"),
        (USER, "long-enough-pw", "long-enough-pw", "already exists"),
    ],
)
def test_register_rejects_bad_input_and_changes_nothing(
    app: Flask, auth: AuthActions, email: str, password: str, confirm: str, message: str
) -> None:
    engine = app.extensions["authz"]
    rules_before = engine.rules()
    audit_before = len(engine.store.audit_entries(limit=1000))
    with app.app_context():
        count_before = len(users.list_users())
    response = auth.register(email, password, confirm)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert engine.rules() == rules_before
    assert len(engine.store.audit_entries(limit=1000)) == audit_before
    with app.app_context():
        assert len(users.list_users()) == count_before


def test_register_requires_csrf(client: FlaskClient) -> None:
    data = {"email": "x@example.com", "password": "long-enough-pw", "confirm": "long-enough-pw"}
    assert client.post("/register", data=data).status_code == 400
    with client.application.app_context():
        assert users.get("x@example.com") is None


def test_password_is_rehashed_on_login_when_parameters_change(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with app.app_context():
        old_hash = users.require(USER).password_hash
    dispose(app)
    app2 = create_app(app_config(tmp_path, argon2_time_cost=2))
    try:
        client = app2.test_client()
        assert AuthActions(client).login().status_code == 302
        with app2.app_context():
            new_hash = users.require(USER).password_hash
        assert new_hash != old_hash
        assert "t=2" in new_hash and new_hash.startswith("$argon2id$")
    finally:
        dispose(app2)


def test_hashes_are_argon2id(app: Flask) -> None:
    with app.app_context():
        assert users.require(USER).password_hash.startswith("$argon2id$")


def test_csrf_token_is_on_every_form(client: FlaskClient, auth: AuthActions) -> None:
    assert csrf_token(client, "/login")
    assert csrf_token(client, "/register")
    auth.login()
    assert csrf_token(client, "/logout")
    assert 'name="csrf_token"' in client.get("/").get_data(as_text=True)  # the nav's logout form
