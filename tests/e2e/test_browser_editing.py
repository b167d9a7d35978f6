"""Editing in a real browser: two admins on one rule, a role and an account created on the web."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page
from playwright.sync_api import expect

from authz import Rule
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.e2e.conftest import login

HOME = Rule.of("p", "user", "/", "GET", "allow")


def admin_page(new_page: Callable[[], Page], base: str) -> Page:
    page = new_page()
    login(page, base, ADMIN, ADMIN_PASSWORD)
    expect(page.locator("#who")).to_have_text(ADMIN)
    return page


def test_two_admins_edit_one_rule_and_the_second_sees_both_versions(
    live_server: str, new_page: Callable[[], Page]
) -> None:
    first, second = admin_page(new_page, live_server), admin_page(new_page, live_server)
    edit = f"{live_server}/admin/rules/{HOME.id}/edit"
    first.goto(edit)
    second.goto(edit)

    first.fill("input[name=methods]", "GET|POST")
    with first.expect_navigation():
        first.locator("#save").click()
    expect(first.locator(".flash.success")).to_contain_text("Changed rule")

    second.fill("input[name=path]", "/home")
    second.locator("#save").click()
    conflict = second.locator("#conflict")
    expect(conflict).to_be_visible()
    expect(second.locator("#current")).to_have_text("p, user, /, GET|POST, allow")
    expect(second.locator("#yours")).to_have_text("p, user, /home, GET, allow")
    expect(second.locator("input[name=path]")).to_have_value("/home")  # what they typed

    # Saving again replaces the current version with theirs.
    with second.expect_navigation():
        second.locator("#save").click()
    expect(second.locator(".flash.success")).to_contain_text("p, user, /home, GET, allow")
    second.goto(f"{live_server}/admin/rules?q=/home")
    expect(second.locator("#rules")).to_contain_text("/home")


def test_an_admin_creates_a_role_with_its_first_rule_then_gives_it_to_a_user(
    live_server: str, new_page: Callable[[], Page]
) -> None:
    page = admin_page(new_page, live_server)
    page.goto(f"{live_server}/admin/roles")
    with page.expect_navigation():
        page.locator("#new-role").click()
    page.fill("input[name=role]", "auditor")
    page.fill("input[name=path]", "/reports/*")
    page.fill("input[name=methods]", "GET")
    with page.expect_navigation():
        page.locator("#create-role").click()
    assert page.url.endswith("/admin/roles/auditor")
    expect(page.locator(".flash.success")).to_contain_text("Created role auditor")

    page.goto(f"{live_server}/admin/users/{USER}")
    page.select_option("select[name=role]", "auditor")
    with page.expect_navigation():
        page.locator("#assign").click()
    expect(page.locator(".flash.success")).to_contain_text(f"{USER} now has role auditor")


def test_an_admin_creates_an_account_that_can_then_log_in(
    live_server: str, new_page: Callable[[], Page]
) -> None:
    page = admin_page(new_page, live_server)
    page.goto(f"{live_server}/admin/users")
    with page.expect_navigation():
        page.locator("#new-user").click()
    page.fill("input[name=email]", "carol@example.com")
    page.fill("input[name=password]", "carol-password-1")
    with page.expect_navigation():
        page.locator("#create-user").click()
    expect(page.locator(".flash.success")).to_contain_text("Created the account carol@example.com")

    carol = new_page()
    login(carol, live_server, "carol@example.com", "carol-password-1")
    expect(carol.locator("#who")).to_have_text("carol@example.com")
