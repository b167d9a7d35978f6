"""The account page and email verification, in a real browser under the strict CSP."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from playwright.sync_api import Page
from playwright.sync_api import expect

from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.e2e.conftest import login
from tests.e2e.conftest import shot


def test_a_user_ends_another_devices_session_from_the_account_page(
    new_page: Callable[[], Page], live_server: str
) -> None:
    """Two devices; the laptop sees both on /account, ends the phone's; the phone is out."""
    laptop, phone = new_page(), new_page()
    login(phone, live_server, USER, USER_PASSWORD)
    login(laptop, live_server, USER, USER_PASSWORD)
    laptop.goto(f"{live_server}/account")
    rows = laptop.locator("#sessions tr.session")
    expect(rows).to_have_count(2)
    expect(laptop.locator(".this-device")).to_have_count(1)
    shot(laptop, "account")
    with laptop.expect_navigation():
        laptop.locator("#end-others").click()
    expect(laptop.locator("#sessions tr.session")).to_have_count(1)
    # The phone's next request is anonymous: it is sent to the login page.
    phone.goto(f"{live_server}/")
    assert urlsplit(phone.url).path == "/login"


def test_a_wrong_current_password_is_shown_next_to_its_field(page: Page, live_server: str) -> None:
    """The change-password form keeps the user on the page with the error by the field."""
    login(page, live_server, USER, USER_PASSWORD)
    page.goto(f"{live_server}/account")
    form = page.locator("#change-password")
    form.locator("input[name=current]").fill("not-the-password-1")
    form.locator("input[name=password]").fill("a-brand-new-passphrase")
    form.locator("input[name=confirm]").fill("a-brand-new-passphrase")
    with page.expect_navigation():
        form.get_by_role("button", name="Change password").click()
    expect(page.locator("#change-password")).to_contain_text(
        re.compile("current password is wrong")
    )


def test_a_new_account_verifies_its_email_through_the_mailed_link(
    page: Page, live_server: str, tmp_path: object
) -> None:
    """Register in the browser, open the link the dev mail backend wrote, see it verified."""
    page.goto(f"{live_server}/register")
    page.fill("input[name=email]", "newcomer@example.com")
    page.fill("input[name=password]", "a-long-fresh-passphrase")
    page.fill("input[name=confirm]", "a-long-fresh-passphrase")
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("Register|Create", re.I)).click()
    expect(page.locator("body")).to_contain_text(re.compile("verif", re.I))
    link = _mailed_link(str(tmp_path), "newcomer@example.com")
    path = urlsplit(link).path
    response = page.goto(f"{live_server}{path}")
    assert response is not None and response.status == 200
    expect(page.locator("body")).to_contain_text(re.compile("verified", re.I))
    shot(page, "verified")


def _mailed_link(folder: str, to: str) -> str:
    """The /verify/ link in the newest message the dev backend wrote for ``to``."""
    import email
    from pathlib import Path

    messages = sorted(Path(folder).rglob("*.eml"), key=lambda p: p.stat().st_mtime)
    for path in reversed(messages):
        message = email.message_from_bytes(path.read_bytes())
        if to not in str(message["To"]):
            continue
        part = message.get_payload(0) if message.is_multipart() else message
        body = part.get_payload(decode=True).decode()  # type: ignore[union-attr]
        found = re.search(r"https?://\S+/verify/\S+", body)
        if found:
            return found.group()
    raise AssertionError(f"no verification mail for {to} under {folder}")
