"""The account page: a user's sessions (one per device), ending them, changing the password;
admins ending an account's sessions from the user page and the API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import users
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import csrf_token
from tests.conftest import dispose
from tests.conftest import make_app

NEW_PASSWORD = "a-brand-new-password-7"


def device(
    app: Flask, email: str = USER, password: str = USER_PASSWORD, agent: str = ""
) -> FlaskClient:
    """A client logged in as ``email`` (one device: one session)."""
    client = app.test_client()
    if agent:
        client.environ_base["HTTP_USER_AGENT"] = agent
    assert AuthActions(client).login(email, password).status_code == 302
    return client


def logged_in(client: FlaskClient) -> bool:
    status = client.get("/").status_code
    assert status in (200, 302)
    return status == 200


def session_ids(client: FlaskClient) -> list[int]:
    page = client.get("/account").get_data(as_text=True)
    return [int(i) for i in re.findall(r'data-session="(\d+)"', page)]


def this_session(client: FlaskClient) -> int:
    page = client.get("/account").get_data(as_text=True)
    match = re.search(r'data-session="(\d+)">(?:(?!</tr>).)*this device', page, re.S)
    assert match, page
    return int(match.group(1))


def post(client: FlaskClient, path: str, **data: object) -> object:
    return client.post(path, data={"csrf_token": csrf_token(client, "/account"), **data})


def test_the_page_lists_this_accounts_sessions_and_marks_this_device(app: Flask) -> None:
    laptop = device(app, agent="LaptopBrowser/1.0")
    phone = device(app, agent="PhoneBrowser/2.0")
    device(app, ADMIN, ADMIN_PASSWORD, agent="AdminBrowser/3.0")
    response = laptop.get("/account")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "LaptopBrowser/1.0" in page and "PhoneBrowser/2.0" in page
    assert "AdminBrowser/3.0" not in page  # another account's sessions are not shown
    assert "127.0.0.1" in page
    assert len(session_ids(laptop)) == 2
    assert this_session(laptop) != this_session(phone)


def test_visitors_are_sent_to_log_in(client: FlaskClient) -> None:
    response = client.get("/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_ending_one_session_ends_only_that_device(app: Flask) -> None:
    laptop, phone, tablet = device(app), device(app), device(app)
    post(laptop, "/account/sessions/end", session=this_session(phone))
    assert not logged_in(phone)
    assert logged_in(laptop) and logged_in(tablet)


def test_another_accounts_session_cannot_be_ended(app: Flask) -> None:
    admin = device(app, ADMIN, ADMIN_PASSWORD)
    target = this_session(admin)
    user = device(app)
    response = post(user, "/account/sessions/end", session=target)
    assert response.status_code == 302
    assert "No such session" in user.get("/account").get_data(as_text=True)
    assert admin.get("/admin/").status_code == 200


def test_ending_this_devices_session_logs_it_out(app: Flask) -> None:
    laptop, phone = device(app), device(app)
    response = post(laptop, "/account/sessions/end", session=this_session(laptop))
    assert "/login" in response.headers["Location"]
    assert not logged_in(laptop) and logged_in(phone)


def test_end_all_others_keeps_this_one(app: Flask) -> None:
    laptop, phone, tablet = device(app), device(app), device(app)
    admin = device(app, ADMIN, ADMIN_PASSWORD)
    post(laptop, "/account/sessions/end-others")
    assert logged_in(laptop)
    assert not logged_in(phone) and not logged_in(tablet)
    assert logged_in(admin)  # another account's sessions are untouched


def test_log_out_everywhere_ends_every_session_of_the_account(app: Flask) -> None:
    laptop, phone = device(app), device(app)
    admin = device(app, ADMIN, ADMIN_PASSWORD)
    post(laptop, "/account/sessions/end-all")
    assert not logged_in(laptop) and not logged_in(phone)
    assert logged_in(admin)


def test_logout_ends_only_this_device_and_its_replayed_cookie(app: Flask) -> None:
    laptop, phone = device(app), device(app)
    stolen = laptop.get_cookie("session").value
    AuthActions(laptop).logout()
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert not logged_in(thief)
    assert logged_in(phone)


@pytest.mark.parametrize(
    "path", ["/account/sessions/end", "/account/sessions/end-others", "/account/sessions/end-all"]
)
def test_forms_without_the_csrf_token_end_nothing(app: Flask, path: str) -> None:
    laptop, phone = device(app), device(app)
    laptop.post(path, data={"session": str(this_session(phone))})
    assert logged_in(laptop) and logged_in(phone)


# -- password change ------------------------------------------------------------------


def change(client: FlaskClient, current: str, new: str, confirm: str | None = None) -> object:
    return post(
        client,
        "/account/password",
        current=current,
        password=new,
        confirm=new if confirm is None else confirm,
    )


def can_log_in(app: Flask, password: str) -> bool:
    return AuthActions(app.test_client()).login(USER, password).status_code == 302


def test_changing_the_password_ends_every_other_session(app: Flask) -> None:
    laptop, phone = device(app), device(app)
    stolen = phone.get_cookie("session").value
    response = change(laptop, USER_PASSWORD, NEW_PASSWORD)
    assert response.status_code == 302
    assert logged_in(laptop)
    assert not logged_in(phone)
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert not logged_in(thief)
    assert can_log_in(app, NEW_PASSWORD) and not can_log_in(app, USER_PASSWORD)


@pytest.mark.parametrize(
    ("current", "new", "confirm", "message"),
    [
        ("not-the-password-1", NEW_PASSWORD, None, "the current password is wrong"),
        (USER_PASSWORD, "short", None, "at least"),
        (USER_PASSWORD, NEW_PASSWORD, "something-else-1", "do not match"),
        ("", NEW_PASSWORD, None, "This field is required"),
    ],
)
def test_a_refused_change_changes_nothing(
    app: Flask, current: str, new: str, confirm: str | None, message: str
) -> None:
    laptop, phone = device(app), device(app)
    response = change(laptop, current, new, confirm)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert logged_in(laptop) and logged_in(phone)
    assert can_log_in(app, USER_PASSWORD)


def test_guessing_the_current_password_is_throttled_like_a_login(app: Flask) -> None:
    """A stolen session cannot guess the password at argon2 speed: the sixth wrong
    current password waits (429, Retry-After), and the right one waits too meanwhile."""
    laptop = device(app)
    statuses = [change(laptop, f"guess-number-{i}", NEW_PASSWORD).status_code for i in range(6)]
    assert statuses == [400] * 5 + [429]
    refused = change(laptop, USER_PASSWORD, NEW_PASSWORD)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert can_log_in(app, USER_PASSWORD) is False  # the login counter is the same one


def test_a_change_without_the_csrf_token_is_refused(app: Flask) -> None:
    laptop = device(app)
    response = laptop.post(
        "/account/password",
        data={"current": USER_PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert response.status_code == 400
    assert can_log_in(app, USER_PASSWORD)


# -- admins ---------------------------------------------------------------------------


def test_an_admin_ends_a_users_sessions_from_the_user_page(app: Flask) -> None:
    laptop, phone = device(app), device(app)
    admin = device(app, ADMIN, ADMIN_PASSWORD)
    page = admin.get(f"/admin/users/{USER}").get_data(as_text=True)
    assert '<span id="session-count">2</span>' in page
    path = f"/admin/users/{USER}/sessions/end"
    assert admin.get(path).status_code == 200  # the confirmation page
    response = admin.post(path, data={"csrf_token": csrf_token(admin, path)})
    assert response.status_code == 302
    assert not logged_in(laptop) and not logged_in(phone)
    assert logged_in(admin)
    assert users_audit(app)[0] == ("session.end_all", ADMIN, USER)


def users_audit(app: Flask) -> list[tuple[str, str, str]]:
    with app.app_context():
        entries = users.engine().store.audit_entries(limit=5)
    return [(e.action, e.actor, e.detail) for e in entries]


def test_a_user_cannot_end_another_users_sessions_as_an_admin_would(app: Flask) -> None:
    admin = device(app, ADMIN, ADMIN_PASSWORD)
    user = device(app)
    path = f"/admin/users/{ADMIN}/sessions/end"
    response = user.post(path, data={"csrf_token": csrf_token(user, "/account")})
    assert response.status_code == 403
    assert user.delete(f"/api/v1/users/{ADMIN}/sessions").status_code == 403
    assert logged_in(admin)


def test_the_api_ends_a_users_sessions(app: Flask) -> None:
    laptop = device(app)
    admin = device(app, ADMIN, ADMIN_PASSWORD)
    token = admin.get("/api/v1/csrf").json["csrf_token"]
    response = admin.delete(f"/api/v1/users/{USER}/sessions", headers={"X-CSRFToken": token})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json == {"email": USER, "ended": 1}
    assert not logged_in(laptop)
    # Without the CSRF token a session-authenticated DELETE is refused.
    again = device(app)
    assert admin.delete(f"/api/v1/users/{USER}/sessions").status_code == 400
    assert logged_in(again)
    missing = admin.delete(
        "/api/v1/users/nobody@example.com/sessions", headers={"X-CSRFToken": token}
    )
    assert missing.status_code == 404


def test_end_all_sessions_ends_every_device(app: Flask) -> None:
    laptop, phone = device(app), device(app)
    with app.app_context():
        users.end_all_sessions(users.require(USER))
    assert not logged_in(laptop) and not logged_in(phone)


def test_deactivation_ends_sessions_for_good(app: Flask) -> None:
    laptop = device(app)
    with app.app_context():
        users.set_active(USER, False, actor="test", source="cli")
        users.set_active(USER, True, actor="test", source="cli")
    assert not logged_in(laptop)  # reactivation revives no session


# -- the cookie -----------------------------------------------------------------------


def test_the_session_cookie_is_httponly_and_samesite(app: Flask) -> None:
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post(
        "/login", data={"email": USER, "password": USER_PASSWORD, "csrf_token": token}
    )
    header = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("session="))
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "Expires=" in header


def test_in_production_the_cookie_is_host_prefixed_and_secure(tmp_path: Path) -> None:
    app = make_app(tmp_path, env="production", secret_key="s" * 40)
    try:
        client = app.test_client()
        client.environ_base["wsgi.url_scheme"] = "https"
        token = csrf_token(client, "/login")
        response = client.post(
            "/login", data={"email": USER, "password": USER_PASSWORD, "csrf_token": token}
        )
        assert response.status_code == 302
        header = next(h for h in response.headers.getlist("Set-Cookie") if "session=" in h)
        # Browsers keep a __Host- cookie only if Secure, for path / and without a domain.
        assert header.startswith("__Host-session=")
        assert "Secure" in header and "Path=/" in header and "Domain" not in header
        assert "HttpOnly" in header and "SameSite=Lax" in header
    finally:
        dispose(app)
