"""AUTHZ_REGISTRATION: open (default), invite (admins send links), closed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from service import users
from tests.conftest import ADMIN
from tests.conftest import AuthActions
from tests.conftest import csrf_token
from tests.conftest import dispose
from tests.conftest import make_app
from tests.integration import mailbox

PASSWORD = "a-long-password-1"


@pytest.fixture(params=["invite", "closed"])
def limited(request: pytest.FixtureRequest, tmp_path: Path, database: object) -> Iterator[Flask]:
    app = make_app(tmp_path, registration=request.param)
    yield app
    dispose(app)


def test_register_page_is_refused_unless_open(limited: Flask) -> None:
    client = limited.test_client()
    page = client.get("/register")
    assert page.status_code == 403
    text = page.get_data(as_text=True)
    assert "invitation only" in text or "Registration is closed" in text
    token = csrf_token(client, "/login")  # the register page has no form to take it from
    data = {"email": "x@example.com", "password": PASSWORD, "confirm": PASSWORD}
    posted = client.post("/register", data={**data, "csrf_token": token})
    assert posted.status_code == 403
    with limited.app_context():
        assert users.get("x@example.com") is None


@pytest.fixture
def invite_app(tmp_path: Path, database: object) -> Iterator[Flask]:
    app = make_app(tmp_path, registration="invite")
    yield app
    dispose(app)


def register_through(app: Flask, link: str, password: str = PASSWORD) -> int:
    client = app.test_client()
    token = csrf_token(client, link)
    data = {"password": password, "confirm": password, "csrf_token": token}
    return client.post(link, data=data).status_code


def test_an_invited_address_registers_through_the_link_verified(invite_app: Flask) -> None:
    runner = invite_app.test_cli_runner()
    result = runner.invoke(args=["users", "invite", "guest@example.com"])
    assert result.exit_code == 0, result.output
    link = mailbox.last_link(invite_app, "guest@example.com")
    assert link in result.output
    assert register_through(invite_app, link) == 302
    with invite_app.app_context():
        user = users.require("guest@example.com")
        assert users.is_verified(user)
        assert users.direct_roles("guest@example.com") == ["user"]
        actions = [e.action for e in users.engine().store.audit_entries(limit=10)]
        assert "user.invite" in actions
    # Single use: the account exists now.
    assert invite_app.test_client().get(link).status_code == 400
    second = invite_app.test_client()
    token = csrf_token(second, "/login")
    data = {"password": "other-password-12", "confirm": "other-password-12", "csrf_token": token}
    assert second.post(link, data=data).status_code == 400


def test_an_admin_invites_from_the_admin_pages(invite_app: Flask) -> None:
    client = invite_app.test_client()
    AuthActions(client).login(ADMIN, "admin-password-1")
    token = csrf_token(client, "/admin/invite")
    page = client.post("/admin/invite", data={"email": "web@example.com", "csrf_token": token})
    assert page.status_code == 200
    assert register_through(invite_app, mailbox.last_link(invite_app, "web@example.com")) == 302


def test_a_user_cannot_invite(invite_app: Flask) -> None:
    client = invite_app.test_client()
    AuthActions(client).login()
    assert client.get("/admin/invite").status_code == 403


def test_a_forged_invitation_is_refused(invite_app: Flask) -> None:
    runner = invite_app.test_cli_runner()
    runner.invoke(args=["users", "invite", "guest@example.com"])
    link = mailbox.last_link(invite_app, "guest@example.com")
    # Another address in the payload, with the old signature: refused.
    forged = "/register/" + "ImV2aWxAZXhhbXBsZS5jb20i." + link.split(".", 1)[1]
    assert invite_app.test_client().get(forged).status_code == 400


def test_closed_refuses_invitations(tmp_path: Path, database: object) -> None:
    app = make_app(tmp_path, registration="closed")
    try:
        result = app.test_cli_runner().invoke(args=["users", "invite", "guest@example.com"])
        assert result.exit_code == 1
        assert "registration is closed" in result.output
        # An admin still creates accounts (verified by their creator).
        created = app.test_cli_runner().invoke(
            args=["users", "create", "made@example.com", "--password", PASSWORD]
        )
        assert created.exit_code == 0, created.output
    finally:
        dispose(app)


def test_open_registration_refuses_common_passwords(app: Flask, auth: AuthActions) -> None:
    page = auth.register("weak@example.com", "qwertyuiop")
    assert page.status_code == 400
    assert "10,000 most common" in page.get_data(as_text=True)
