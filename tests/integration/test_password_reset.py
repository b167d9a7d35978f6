"""Forgotten passwords: a mailed, single-use, short-lived link; the same answer for anyone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import users
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import csrf_token
from tests.conftest import dispose
from tests.conftest import make_app
from tests.integration import mailbox

NEW_PASSWORD = "a-brand-new-password-7"


def forgot(client: FlaskClient, email: str) -> tuple[int, str]:
    token = csrf_token(client, "/password/forgot")
    response = client.post("/password/forgot", data={"email": email, "csrf_token": token})
    return response.status_code, response.get_data(as_text=True)


def reset(client: FlaskClient, link: str, password: str, confirm: str | None = None) -> int:
    token = csrf_token(client, link)
    data = {"password": password, "confirm": confirm or password, "csrf_token": token}
    return client.post(link, data=data).status_code


def test_the_answer_is_the_same_whether_or_not_the_account_exists(
    app: Flask, client: FlaskClient
) -> None:
    known = forgot(client, USER)
    unknown = forgot(client, "nobody@example.com")
    assert known[0] == unknown[0] == 200
    # The page differs only in its CSRF token (none on this page) and nothing else.
    assert known[1] == unknown[1]
    assert len(mailbox.to(app, USER)) == 1
    assert mailbox.to(app, "nobody@example.com") == []


def test_a_reset_link_sets_the_password_and_ends_every_session(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    other_device = app.test_client()
    assert AuthActions(other_device).login().status_code == 302
    assert other_device.get("/").status_code == 200

    forgot(client, USER)
    link = mailbox.last_link(app, USER)
    assert link.startswith("/password/reset/")
    assert client.get(link).status_code == 200
    assert reset(client, link, NEW_PASSWORD) == 302

    assert other_device.get("/").status_code == 302  # logged out: sent to the login page
    assert auth.login(USER, USER_PASSWORD).status_code == 401
    assert auth.login(USER, NEW_PASSWORD).status_code == 302


def test_a_reset_link_works_once(app: Flask, client: FlaskClient) -> None:
    forgot(client, USER)
    link = mailbox.last_link(app, USER)
    assert reset(client, link, NEW_PASSWORD) == 302
    again = client.get(link)
    assert again.status_code == 400
    assert "already used" in again.get_data(as_text=True)
    assert client.post(link, data={"password": "another-password-9"}).status_code == 400


def test_an_older_reset_link_dies_when_the_password_changes(
    app: Flask, client: FlaskClient
) -> None:
    forgot(client, USER)
    first = mailbox.last_link(app, USER)
    forgot(client, USER)
    second = mailbox.last_link(app, USER)
    assert reset(client, second, NEW_PASSWORD) == 302
    assert client.get(first).status_code == 400


def test_a_reset_link_expires(tmp_path: Path, database: object) -> None:
    app = make_app(tmp_path, reset_max_age=1)
    try:
        client = app.test_client()
        forgot(client, USER)
        link = mailbox.last_link(app, USER)
        time.sleep(2.1)  # itsdangerous counts whole seconds
        page = client.get(link)
        assert page.status_code == 400
        assert "has expired" in page.get_data(as_text=True)
        assert AuthActions(client).login().status_code == 302  # password unchanged
    finally:
        dispose(app)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 10 characters"),
        ("1234567890", "10,000 most common"),
        ("QwertyUiop", "10,000 most common"),
    ],
)
def test_a_reset_refuses_weak_passwords(
    app: Flask, client: FlaskClient, password: str, message: str
) -> None:
    forgot(client, USER)
    link = mailbox.last_link(app, USER)
    token = csrf_token(client, link)
    page = client.post(link, data={"password": password, "confirm": password, "csrf_token": token})
    assert page.status_code == 400
    assert message in page.get_data(as_text=True)
    assert AuthActions(client).login().status_code == 302  # unchanged; link still good
    assert client.get(link).status_code == 200


def test_no_link_for_a_deactivated_account(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        users.set_active(USER, False, actor="test", source="cli")
    assert forgot(client, USER)[0] == 200
    assert mailbox.to(app, USER) == []


def test_a_reset_link_verifies_an_unverified_address(app: Flask, client: FlaskClient) -> None:
    AuthActions(client).register("fresh@example.com", "fresh-password-12")
    anon = app.test_client()
    forgot(anon, "fresh@example.com")
    assert reset(anon, mailbox.last_link(app, "fresh@example.com"), NEW_PASSWORD) == 302
    with app.app_context():
        user = users.require("fresh@example.com")
        assert users.is_verified(user)


def test_similar_time_whether_or_not_the_account_exists(app: Flask) -> None:
    client = app.test_client()

    def timed(email: str) -> float:
        started = time.perf_counter()
        forgot(client, email)
        return time.perf_counter() - started

    for email in (USER, "nobody@example.com"):  # warm up both paths
        timed(email)
    known = sorted(timed(USER) for _ in range(7))[3]
    unknown = sorted(timed("nobody@example.com") for _ in range(7))[3]
    # Medians within a generous factor: mail goes out in the background, so a slow
    # mail server is no oracle; this catches a path that does much more work.
    assert known < 3 * unknown + 0.02 and unknown < 3 * known + 0.02
