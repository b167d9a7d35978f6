"""Policy tests in a real browser: a stored promise refuses the edit that breaks it, and the
what-if shows who gains access before a permitted change is saved."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page
from playwright.sync_api import expect

from authz import Rule
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.e2e.conftest import login


def admin_page(new_page: Callable[[], Page], base: str) -> Page:
    page = new_page()
    login(page, base, ADMIN, ADMIN_PASSWORD)
    expect(page.locator("#who")).to_have_text(ADMIN)
    return page


def fill_rule(page: Page, subject: str, path: str, methods: str, effect: str = "allow") -> None:
    page.fill("input[name=subject]", subject)
    page.fill("input[name=path]", path)
    page.fill("input[name=methods]", methods)
    page.select_option("select[name=effect]", effect)


def test_a_stored_test_refuses_a_breaking_rule_and_a_preview_comes_before_saving(
    live_server: str, new_page: Callable[[], Page]
) -> None:
    page = admin_page(new_page, live_server)

    # The admin stores the promise "anonymous may not GET /admin/" on the tests page.
    page.goto(f"{live_server}/admin/rules")
    with page.expect_navigation():
        page.get_by_role("navigation", name="Policy editor").get_by_role(
            "link", name="Policy tests"
        ).click()
    page.fill("#test-form input[name=subject]", "anonymous")
    page.fill("#test-form input[name=method]", "GET")
    page.fill("#test-form input[name=path]", "/admin/")
    page.select_option("#test-form select[name=outcome]", "deny")
    page.fill("#test-form input[name=note]", "visitors never open the editor")
    with page.expect_navigation():
        page.locator("#add-test").click()
    expect(page.locator(".flash.success")).to_contain_text(
        "Stored the policy test: anonymous may not GET /admin/"
    )
    row = page.locator("#tests tr.test")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("pass")
    expect(row).to_contain_text("denied: no rule matches")

    # A rule that would let visitors into the editor is refused, the test and rule named.
    page.goto(f"{live_server}/admin/rules/new")
    fill_rule(page, "anonymous", "/admin/*", "GET")
    page.locator("#save").click()
    refused = page.locator("#refused")
    expect(refused).to_be_visible()
    expect(refused).to_contain_text("Refused by policy tests")
    expect(refused.locator(".test")).to_have_text("anonymous may not GET /admin/")
    expect(refused.locator(".deciding-rule")).to_have_text("p, anonymous, /admin/*, GET, allow")
    expect(page.locator("input[name=path]")).to_have_value("/admin/*")  # what was typed
    page.goto(f"{live_server}/admin/rules?subject=anonymous")
    expect(page.locator("#rules")).not_to_contain_text("/admin/*")

    # A permitted change: the preview shows who gains, then Save writes it.
    page.goto(f"{live_server}/admin/rules/new")
    fill_rule(page, "user", "/reports/:id", "POST")
    page.locator("#preview").click()
    whatif = page.locator("#whatif")
    expect(whatif).to_be_visible()
    expect(whatif.locator("#whatif-access")).to_contain_text("+ user may now POST /reports/:id")
    expect(whatif.locator("#whatif-accepted")).to_be_visible()
    listed = page.request.get(f"{live_server}/admin/rules?q=/reports/").text()
    assert "No rule matches" in listed  # nothing saved by the preview

    expect(page.locator("input[name=path]")).to_have_value("/reports/:id")
    with page.expect_navigation():
        page.locator("#save").click()
    expect(page.locator(".flash.success")).to_contain_text("p, user, /reports/:id, POST, allow")
    new = Rule.of("p", "user", "/reports/:id", "POST", "allow")
    expect(page.locator(f"#rules tr[data-id='{new.id}']")).to_have_count(1)


def test_a_tried_request_is_kept_as_a_test_in_one_click(
    live_server: str, new_page: Callable[[], Page]
) -> None:
    page = admin_page(new_page, live_server)
    page.goto(f"{live_server}/admin/try")
    page.fill("#subject", "user")
    page.fill("#path", "/admin/")
    with page.expect_navigation():
        page.locator("#try").click()
    expect(page.locator("#verdict")).to_have_text("deny")
    expect(page.locator("#promise")).to_have_text("user may not GET /admin/")
    page.fill("input[name=note]", "only admins")
    with page.expect_navigation():
        page.locator("#save-test").click()
    expect(page.locator(".flash.success")).to_contain_text(
        "Saved the policy test: user may not GET /admin/"
    )
    with page.expect_navigation():
        page.locator("#saved a").click()
    expect(page.locator("#tests tr.test")).to_contain_text("only admins")
