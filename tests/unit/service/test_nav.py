"""Navigation the policy allows: ``may`` asks the engine, caches per request, fails closed.

The app is real (default policy, an admin and a plain user, SQLite: the helper decides
from the in-memory snapshot, whatever the database).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask import g
from flask.testing import FlaskClient

from authz import Change
from authz import Rule
from service import create_app
from service import nav
from service import users
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import app_config
from tests.conftest import csrf_token
from tests.conftest import dispose
from tests.conftest import make_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    dispose(app)


def login(client: FlaskClient, email: str, password: str) -> None:
    token = csrf_token(client, "/login")
    response = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token}
    )
    assert response.status_code == 302


def decide_as(app: Flask, subject: str, method: str, path: str) -> bool:
    with app.test_request_context("/"):
        g.authz_subject = subject
        return nav.may(method, path)


@pytest.mark.parametrize(
    ("subject", "method", "path", "allowed"),
    [
        (ADMIN, "GET", "/admin/rules", True),
        (ADMIN, "POST", "/admin/rules/new", True),
        (USER, "GET", "/admin/rules", False),
        (USER, "GET", "/account", True),
        (USER, "POST", "/logout", True),
        ("anonymous", "GET", "/", False),
        ("anonymous", "GET", "/login", True),
        # What a link carries besides its path is not part of the decision.
        (ADMIN, "GET", "/admin/rules?page=2#top", True),
        (USER, "GET", "/account?x=1", True),
        # HEAD is decided as GET, as the middleware decides it.
        (USER, "HEAD", "/account", True),
    ],
)
def test_may_asks_the_engine_for_the_subject(
    app: Flask, subject: str, method: str, path: str, allowed: bool
) -> None:
    assert decide_as(app, subject, method, path) is allowed


@pytest.mark.parametrize(
    "path",
    [
        "/admin/users/x%2Fy",  # an encoded slash: the middleware answers 400, never a decision
        "/admin/../admin/rules",  # a dot segment
        "/admin/" + "a" * 10_000,  # too long to decide
    ],
)
def test_a_link_the_engine_will_not_decide_is_hidden(app: Flask, path: str) -> None:
    assert decide_as(app, ADMIN, "GET", path) is False


def test_an_engine_that_cannot_decide_hides_every_link(tmp_path: Path) -> None:
    # A fresh install before `db init`: the policy is not loaded, every request gets 503.
    app = create_app(app_config(tmp_path))
    try:
        assert not app.extensions["authz"].loaded
        assert decide_as(app, ADMIN, "GET", "/admin/rules") is False
        assert decide_as(app, "anonymous", "GET", "/login") is False
    finally:
        dispose(app)


def test_decisions_are_cached_for_the_request_only(app: Flask) -> None:
    engine = app.extensions["authz"]
    grant = Rule.of("p", USER, "/reports/*", "GET")
    with app.test_request_context("/"):
        g.authz_subject = USER
        assert nav.may("GET", "/reports/1") is False
        engine.apply(Change.adding(grant), actor="test", source="cli")
        # The page being rendered keeps one answer per link, whatever changes meanwhile.
        assert nav.may("GET", "/reports/1") is False
    assert decide_as(app, USER, "GET", "/reports/1") is True


@pytest.mark.parametrize(
    ("here", "link", "expected"),
    [
        ("/admin/rules", "/admin/rules", "page"),
        ("/admin/rules/new", "/admin/rules", "true"),
        ("/admin/rules", "/admin/", "true"),
        ("/admin/", "/admin/", "page"),
        ("/admin/rulesets", "/admin/rules", None),  # a prefix of the name is not a section
        ("/admin/rules", "/", None),  # the home page is nobody's section
        ("/", "/", "page"),
        ("/account", "/admin/", None),
    ],
)
def test_the_current_link_is_marked(app: Flask, here: str, link: str, expected: str | None) -> None:
    with app.test_request_context(here):
        assert nav.current(link) == expected


# -- what the pages show -------------------------------------------------------------------


def test_a_plain_user_gets_no_admin_link_and_an_admin_does(app: Flask) -> None:
    user, admin = app.test_client(), app.test_client()
    login(user, USER, USER_PASSWORD)
    login(admin, ADMIN, ADMIN_PASSWORD)
    assert 'href="/admin/"' not in user.get("/").get_data(as_text=True)
    assert 'href="/admin/"' in admin.get("/").get_data(as_text=True)


def test_an_anonymous_visitor_gets_log_in_and_register_only(app: Flask) -> None:
    html = app.test_client().get("/login").get_data(as_text=True)
    assert 'href="/register"' in html
    assert 'href="/"' not in html  # the home page would only send them back here
    assert 'action="/logout"' not in html


def test_the_forbidden_page_keeps_the_navigation_the_subject_may_follow(app: Flask) -> None:
    client = app.test_client()
    login(client, USER, USER_PASSWORD)
    for path in ("/admin/", "/no-such-page"):
        response = client.get(path)
        assert response.status_code == 403
        html = response.get_data(as_text=True)
        assert 'aria-label="Site"' in html and 'href="/account"' in html
        assert 'action="/logout"' in html
        assert 'href="/admin/"' not in html
        assert "no page serves" in html


def test_a_page_the_subject_may_read_but_not_change_has_no_save_button(app: Flask) -> None:
    # A reviewer may open the rule form (GET) but not send it (POST).
    with app.app_context():
        users.engine().apply(
            Change(
                add=(
                    Rule.of("p", "reviewer", "/admin/rules", "GET"),
                    Rule.of("p", "reviewer", "/admin/rules/new", "GET"),
                    Rule.of("g", USER, "reviewer"),
                )
            ),
            actor="test",
            source="cli",
        )
    client = app.test_client()
    login(client, USER, USER_PASSWORD)
    rules = client.get("/admin/rules").get_data(as_text=True)
    assert 'id="add-rule"' in rules
    assert "/edit" not in rules and "/delete" not in rules
    assert 'href="/admin/roles"' not in rules  # the editor's other pages are not offered
    form = client.get("/admin/rules/new").get_data(as_text=True)
    assert 'id="save"' not in form
    assert "does not let your account make this change" in form
