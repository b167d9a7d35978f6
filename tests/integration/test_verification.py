"""Email ownership: rows naming an address apply only once its owner verified it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner

from authz import Change
from authz import Rule
from service import editing
from service import migrations
from service import users
from service.extensions import db
from service.models import User
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import Backend
from tests.conftest import dispose
from tests.conftest import make_app
from tests.integration import mailbox
from tests.integration.test_migrations import OLD_USER
from tests.integration.test_migrations import fill_v0
from tests.integration.test_migrations import load_v0

PASSWORD = "a-long-password-1"


def add_rows(app: Flask, *rows: Rule) -> None:
    with app.app_context():
        users.engine().apply(Change.adding(*rows), actor=ADMIN, source="web")


def verified_at(app: Flask, email: str) -> dt.datetime | None:
    with app.app_context():
        value = db.session.scalar(sa.select(User.verified_at).where(User.email == email))
        db.session.rollback()
        return value


def test_a_pre_granted_email_gives_nothing_until_its_owner_verifies_it(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    # The attack of issue 9: an admin grants an address before its owner registers;
    # someone else registers it first.
    add_rows(app, Rule.of("p", "newhire@example.com", "/admin/*", ".*", "allow"))
    response = auth.register("newhire@example.com", PASSWORD)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/verify/sent")
    assert verified_at(app, "newhire@example.com") is None
    assert client.get("/admin/users").status_code == 403
    assert client.get("/").status_code == 200  # the default role still applies

    link = mailbox.last_link(app, "newhire@example.com")
    assert link.startswith("/verify/")
    page = client.get(link)
    assert page.status_code == 200
    assert "Email verified" in page.get_data(as_text=True)
    assert verified_at(app, "newhire@example.com") is not None
    assert client.get("/admin/users").status_code == 200  # the very next request


def test_a_csv_role_for_an_unregistered_email_is_not_claimed_by_registering_it(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    csv = tmp_path / "ghost.csv"
    csv.write_text("g, ghost@example.com, admin\n", encoding="utf-8")
    result = runner.invoke(args=["policy", "load", str(csv)])
    assert result.exit_code == 0, result.output
    attacker = app.test_client()
    assert AuthActions(attacker).register("Ghost@Example.com", PASSWORD).status_code == 302
    assert attacker.get("/admin/").status_code == 403
    assert attacker.get("/api/v1/rules", headers={"Accept": "application/json"}).status_code == 403
    # The CLI says how the account is decided.
    result = runner.invoke(args=["policy", "check", "ghost@example.com", "/admin/", "GET"])
    assert "has not verified its email" in result.output

    # The owner of the mailbox verifies (in another browser): the grant applies.
    owner = app.test_client()
    assert owner.get(mailbox.last_link(app, "ghost@example.com")).status_code == 200
    assert attacker.get("/admin/").status_code == 200


def test_an_unverified_account_does_not_count_as_an_editor_for_the_lockout_guard(
    app: Flask, auth: AuthActions
) -> None:
    add_rows(app, Rule.of("g", "mallory@example.com", "admin"))
    auth.register("mallory@example.com", PASSWORD)
    with app.app_context():
        # Taking the only verified admin's role is refused: mallory is no editor yet.
        with pytest.raises(Exception, match="editor"):
            editing.unassign(ADMIN, "admin", editing.Who("test", "cli"))


def test_the_verification_link_works_once(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.register("once@example.com", PASSWORD)
    link = mailbox.last_link(app, "once@example.com")
    assert client.get(link).status_code == 200
    again = client.get(link)
    assert again.status_code == 400
    assert "already used" in again.get_data(as_text=True)


def test_a_verification_link_expires(tmp_path: Path, database: object) -> None:
    app = make_app(tmp_path, verify_max_age=1)
    try:
        client = app.test_client()
        AuthActions(client).register("late@example.com", PASSWORD)
        link = mailbox.last_link(app, "late@example.com")
        import time

        time.sleep(2.1)  # itsdangerous counts whole seconds
        page = client.get(link)
        assert page.status_code == 400
        assert "has expired" in page.get_data(as_text=True)
        assert verified_at(app, "late@example.com") is None
    finally:
        dispose(app)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature
        lambda t: "x" + t,  # payload
        lambda t: "not-a-token",
    ],
)
def test_a_forged_verification_link_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions, tamper: object
) -> None:
    auth.register("forged@example.com", PASSWORD)
    link = mailbox.last_link(app, "forged@example.com")
    token = link.removeprefix("/verify/")
    assert callable(tamper)
    assert client.get("/verify/" + tamper(token)).status_code == 400
    assert verified_at(app, "forged@example.com") is None


def test_a_reset_link_does_not_pass_as_a_verification_link(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.register("salt@example.com", PASSWORD)
    anon = app.test_client()
    token = mailbox.last_link(app, "salt@example.com").removeprefix("/verify/")
    assert anon.get("/password/reset/" + token).status_code == 400
    with app.app_context():
        users.request_password_reset("salt@example.com")
    reset = mailbox.last_link(app, "salt@example.com").removeprefix("/password/reset/")
    assert anon.get("/verify/" + reset).status_code == 400
    assert verified_at(app, "salt@example.com") is None


def test_resend_mails_a_new_link(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    from tests.conftest import csrf_token

    auth.register("resend@example.com", PASSWORD)
    token = csrf_token(client, "/verify/sent")
    assert client.post("/verify/resend", data={"csrf_token": token}).status_code == 302
    assert len(mailbox.to(app, "resend@example.com")) == 2
    assert client.get(mailbox.last_link(app, "resend@example.com")).status_code == 200


def test_admin_and_cli_created_accounts_are_verified(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["users", "create", "cli@example.com", "--password", PASSWORD])
    assert result.exit_code == 0, result.output
    assert verified_at(app, "cli@example.com") is not None
    assert verified_at(app, ADMIN) is not None
    assert mailbox.to(app, "cli@example.com") == []


def test_the_link_points_at_the_public_url_not_the_host_header(
    tmp_path: Path, database: object
) -> None:
    app = make_app(tmp_path, public_url="https://authz.example.com")
    try:
        client = app.test_client()
        AuthActions(client).register("host@example.com", PASSWORD)
        body = mailbox.to(app, "host@example.com")[-1].get_content()
        assert "https://authz.example.com/verify/" in body
        with app.app_context():
            client.post(
                "/password/forgot",
                data={"email": ADMIN},
                headers={"Host": "evil.example.net"},
            )
        for message in mailbox.messages(app):
            assert "evil.example.net" not in message.get_content()
    finally:
        dispose(app)


def test_an_admin_login_still_works_after_the_migration_marks_it_verified(
    app: Flask, auth: AuthActions, client: FlaskClient
) -> None:
    assert auth.login(ADMIN, ADMIN_PASSWORD).status_code == 302
    assert client.get("/admin/users").status_code == 200


def test_accounts_that_exist_when_0002_runs_are_marked_verified(
    tmp_path: Path, database: Backend
) -> None:
    # They were made by admins or registered under the old rules, and their owners use
    # their grants today: an upgrade must not take those away.
    engine = sa.create_engine(database.url(tmp_path))
    try:
        load_v0(engine)
        fill_v0(engine)
        migrations.upgrade(engine)
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT verified_at, created_at FROM users WHERE email = :e"),
                {"e": OLD_USER},
            ).one()
        assert row.verified_at is not None
        assert row.verified_at == row.created_at
    finally:
        engine.dispose()
