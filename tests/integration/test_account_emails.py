"""Every account can be managed on the web: emails that cannot sit in a URL are refused."""

from __future__ import annotations

import html
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner

from service import users
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import AuthActions

PASSWORD = "a-long-password-1"


def accounts(app: Flask) -> list[str]:
    with app.app_context():
        return [u.email for u in users.list_users()]


def audit_size(app: Flask) -> int:
    return len(app.extensions["authz"].store.audit_entries(limit=100_000))


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("a\x01b@example.com", "cannot contain spaces or control characters"),
        ("a\x1fb@example.com", "cannot contain spaces or control characters"),
        ("a\u200bb@example.com", "cannot contain spaces or control characters"),
        ("a/b@example.com", "cannot contain / ? # % or \\"),
        ("a%2fb@example.com", "cannot contain / ? # % or \\"),
        ("a?b@example.com", "cannot contain / ? # % or \\"),
        ("a#b@example.com", "cannot contain / ? # % or \\"),
        ("a\\b@example.com", "cannot contain / ? # % or \\"),
        ("jos\u00e9@example.com", "only ASCII email addresses are supported"),
        ("\u212aofi@example.com", "only ASCII email addresses are supported"),
        ("boss@example.com.", "enter a valid email address"),
    ],
)
def test_registration_refuses_an_email_with_a_form_error(
    app: Flask, client: FlaskClient, auth: AuthActions, email: str, message: str
) -> None:
    before = accounts(app), audit_size(app)
    response = auth.register(email, PASSWORD)
    assert response.status_code == 400
    assert message in html.unescape(response.get_data(as_text=True))
    assert (accounts(app), audit_size(app)) == before
    assert client.get("/").status_code == 302  # not logged in


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("a\x01b@example.com", "cannot contain spaces or control characters"),
        ("a%b@example.com", "cannot contain / ? # % or \\"),
        ("a/b@example.com", "cannot contain / ? # % or \\"),
        ("b\u00fccher@example.com", "only ASCII email addresses are supported"),
    ],
)
def test_the_command_line_refuses_the_same_emails(
    app: Flask, runner: FlaskCliRunner, email: str, message: str
) -> None:
    before = accounts(app), audit_size(app)
    result = runner.invoke(args=["users", "create", email, "--password", PASSWORD])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert message in result.output
    assert (accounts(app), audit_size(app)) == before


def test_an_account_with_every_allowed_character_is_managed_on_the_web(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    """Registered, found, shown and deactivated through its own URL, in the editor and the API."""
    email = "o'neil+tag.x=y~z!a$b&c*d_e-f@sub.example-1.org"
    assert auth.register(email.upper(), PASSWORD).status_code == 302
    auth.logout()
    auth.login(ADMIN, ADMIN_PASSWORD)
    listing = client.get("/admin/users").get_data(as_text=True)
    links = {html.unescape(href) for href in re.findall(r'href="(/admin/users/[^"]+)"', listing)}
    assert f"/admin/users/{email}" in links  # linked as it is, no escape needed
    assert client.get(f"/admin/users/{email}").status_code == 200
    assert client.get(f"/api/v1/users/{email}").json["user"]["email"] == email  # type: ignore[index]
    token = client.get("/api/v1/csrf").json["csrf_token"]  # type: ignore[index]
    response = client.post(f"/api/v1/users/{email}/deactivate", headers={"X-CSRFToken": token})
    assert response.status_code == 200, response.get_data(as_text=True)
    with app.app_context():
        account = users.get(email)
        assert account is not None and not account.active
