"""The first admin: made only on a database nobody can administer, never a resurrection."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Flask
from flask.testing import FlaskCliRunner

from service import create_app
from service import editing
from service import users
from service.bootstrap import init_database
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import app_config
from tests.conftest import dispose


def roles(app: Flask, email: str) -> list[str]:
    with app.app_context():
        return users.direct_roles(email)


def test_restart_with_admin_email_does_not_undo_a_revocation(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    # A second admin takes the first one's role away and deactivates it.
    with app.app_context():
        users.create(
            "second@example.com", "second-password-1", roles=["admin"], actor="t", source="cli"
        )
        editing.unassign(ADMIN, "admin", editing.Who("second@example.com", "web"))
        users.set_active(ADMIN, False, actor="second@example.com", source="web")
    # A restart with AUTHZ_ADMIN_EMAIL naming the revoked admin (db init, and serve's init).
    restarted = create_app(app_config(tmp_path, admin_email=ADMIN, admin_password=ADMIN_PASSWORD))
    try:
        with restarted.app_context():
            init_database(create_admin=True, actor="test")
            assert not users.require(ADMIN).active
        out = restarted.test_cli_runner().invoke(args=["db", "init", "--admin-email", ADMIN])
        assert out.exit_code == 0, out.output
        assert roles(restarted, ADMIN) == []
        with restarted.app_context():
            assert not users.require(ADMIN).active
        assert AuthActions(restarted.test_client()).login(ADMIN, ADMIN_PASSWORD).status_code == 401
    finally:
        dispose(restarted)


def test_no_promotion_of_an_existing_account_even_when_nobody_is_admin(
    app: Flask, runner: FlaskCliRunner
) -> None:
    with app.app_context():
        editing.unassign(ADMIN, "admin", editing.Who("test", "cli"), force=True)
    result = runner.invoke(args=["db", "init", "--admin-email", USER])
    assert result.exit_code == 0, result.output
    assert "users recover-admin user@example.com" in result.output
    assert "admin" not in roles(app, USER)


def test_a_fresh_database_gets_its_first_admin_once(tmp_path: Path, database: object) -> None:
    app = create_app(app_config(tmp_path))
    try:
        runner = app.test_cli_runner()
        out = runner.invoke(args=["db", "init", "--admin-email", "boss@example.com"])
        assert out.exit_code == 0, out.output
        match = re.search(r"Admin password \(shown once\): (\S+)", out.output)
        assert match, out.output
        assert roles(app, "boss@example.com") == ["admin"]
        with app.app_context():
            assert users.is_verified(users.require("boss@example.com"))
        client = app.test_client()
        assert AuthActions(client).login("boss@example.com", match.group(1)).status_code == 302
        assert client.get("/admin/").status_code == 200
        # Once there is an admin, another init creates nobody.
        again = runner.invoke(args=["db", "init", "--admin-email", "other@example.com"])
        assert "shown once" not in again.output
        with app.app_context():
            assert users.get("other@example.com") is None
    finally:
        dispose(app)


def test_serve_init_creates_an_admin_only_when_nobody_can_edit(app: Flask) -> None:
    with app.app_context():
        report = init_database(create_admin=True, actor="test")
        assert report.admin_email is None
        assert users.get("admin@localhost") is None


def test_recover_admin_after_everyone_is_locked_out(app: Flask, runner: FlaskCliRunner) -> None:
    with app.app_context():
        users.set_active(ADMIN, False, actor="test", source="cli", force=True)
    result = runner.invoke(args=["users", "recover-admin", ADMIN])
    assert result.exit_code == 0, result.output
    client = app.test_client()
    assert AuthActions(client).login(ADMIN, ADMIN_PASSWORD).status_code == 302
    assert client.get("/admin/").status_code == 200
    with app.app_context():
        entry = users.engine().store.audit_entries(limit=1)[0]
        assert entry.action == "user.recover-admin"
        assert entry.actor.startswith("cli")


def test_recover_admin_creates_a_missing_account(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["users", "recover-admin", "rescue@example.com"])
    assert result.exit_code == 0, result.output
    password = re.search(r"Password \(shown once\): (\S+)", result.output)
    assert password, result.output
    client = app.test_client()
    assert AuthActions(client).login("rescue@example.com", password.group(1)).status_code == 302
    assert client.get("/admin/").status_code == 200
