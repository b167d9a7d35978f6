"""Login, home, the 403 page, the admin landing page and logout, in a real browser."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs
from urllib.parse import urlsplit

from playwright.sync_api import Page
from playwright.sync_api import expect

from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.e2e.conftest import login
from tests.e2e.conftest import shot


def test_an_anonymous_visitor_is_sent_to_the_login_page(page: Page, live_server: str) -> None:
    page.goto(f"{live_server}/")
    url = urlsplit(page.url)
    assert url.path == "/login"
    assert parse_qs(url.query) == {"next": ["/"]}
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("input[name=email]")).to_be_visible()
    expect(page.locator("#logout")).to_have_count(0)
    shot(page, "login")


def test_a_user_logs_in_and_lands_on_the_home_page(page: Page, live_server: str) -> None:
    login(page, live_server, USER, USER_PASSWORD)
    assert page.url == f"{live_server}/"
    expect(page.get_by_role("navigation", name="Site")).to_contain_text(f"Logged in as {USER}")
    expect(page.locator("#who")).to_have_text(USER)
    expect(page.get_by_role("heading", name="Home")).to_be_visible()
    shot(page, "home")


def test_a_wrong_password_keeps_the_visitor_out(page: Page, live_server: str) -> None:
    login(page, live_server, USER, "not-the-password")
    assert urlsplit(page.url).path == "/login"
    expect(page.locator(".flash.error")).to_be_visible()
    expect(page.locator("#who")).to_have_count(0)


def test_a_user_gets_the_forbidden_page_for_admin(page: Page, live_server: str) -> None:
    login(page, live_server, USER, USER_PASSWORD)
    response = page.goto(f"{live_server}/admin/")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text(re.compile("403"))
    expect(page.locator(".detail")).to_contain_text(f"({USER})")
    expect(page.locator(".detail")).to_contain_text("may not GET /admin/")
    expect(page.locator("#revision")).to_have_count(0)
    shot(page, "forbidden")


def test_an_admin_opens_the_admin_page(page: Page, live_server: str) -> None:
    login(page, live_server, ADMIN, ADMIN_PASSWORD)
    response = page.goto(f"{live_server}/admin/")
    assert response is not None and response.status == 200
    expect(page.locator("main")).to_contain_text("Policy revision")
    expect(page.locator("#revision")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#who")).to_have_text(ADMIN)
    shot(page, "admin")


def test_the_logout_button_ends_the_session(
    page: Page, live_server: str, new_page: Callable[[], Page]
) -> None:
    login(page, live_server, USER, USER_PASSWORD)
    expect(page.locator("#who")).to_have_text(USER)
    cookies = page.context.cookies()
    assert cookies, "no session cookie after login"

    with page.expect_navigation():
        page.locator("#logout").click()
    assert urlsplit(page.url).path == "/login"
    expect(page.locator(".flash.success")).to_contain_text("logged out")
    expect(page.locator("#who")).to_have_count(0)

    page.goto(f"{live_server}/")
    assert urlsplit(page.url).path == "/login"

    # The session is ended on the server: the cookie from before logout opens nothing.
    replay = new_page()
    replay.context.add_cookies(cookies)  # type: ignore[arg-type]
    replay.goto(f"{live_server}/")
    assert urlsplit(replay.url).path == "/login"
    expect(replay.locator("#who")).to_have_count(0)
