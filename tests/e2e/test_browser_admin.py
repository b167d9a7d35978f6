"""The policy editor in a real browser: rules, users and roles, try a request, audit.

The scenarios of the issue: a rule added in the editor governs another visitor's very next
request (no restart), and stops when it is deleted; a role assigned on the Users page opens
the admin page to that user; "try a request" names the deciding rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs
from urllib.parse import unquote
from urllib.parse import urlsplit

from playwright.sync_api import Locator
from playwright.sync_api import Page
from playwright.sync_api import expect

from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.e2e.conftest import login
from tests.e2e.conftest import shot

#: The p rows of policies/default.csv, which a fresh test app gets.
DEFAULT_P_ROWS = 18


def path_of(page: Page) -> str:
    return unquote(urlsplit(page.url).path)


def logged_in(new_page: Callable[[], Page], base: str, email: str, password: str) -> Page:
    """A fresh visitor (own cookies), logged in."""
    page = new_page()
    login(page, base, email, password)
    expect(page.locator("#who")).to_have_text(email)
    return page


def status_of(page: Page, url: str) -> int:
    response = page.goto(url)
    assert response is not None
    return response.status


def exactly(text: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def rule_row(page: Page, subject: str, path: str, methods: str) -> Locator:
    """The ``tr.rule`` rows of #rules showing exactly this subject, path and methods."""
    return (
        page.locator("#rules tr.rule")
        .filter(has=page.locator("td:nth-child(1)", has_text=exactly(subject)))
        .filter(has=page.locator("td:nth-child(2)", has_text=exactly(path)))
        .filter(has=page.locator("td:nth-child(3)", has_text=exactly(methods)))
    )


def fill_rule_form(page: Page, subject: str, path: str, methods: str, effect: str) -> None:
    page.fill("input[name=subject]", subject)
    page.fill("input[name=path]", path)
    page.fill("input[name=methods]", methods)
    page.select_option("select[name=effect]", effect)
    with page.expect_navigation():
        page.click("button#save")


def add_rule(page: Page, base: str, subject: str, path: str, methods: str, effect: str) -> None:
    """Add a rule through the Rules page's "add" link and form; check it landed."""
    page.goto(f"{base}/admin/rules")
    with page.expect_navigation():
        page.click("a#add-rule")
    assert path_of(page) == "/admin/rules/new"
    fill_rule_form(page, subject, path, methods, effect)
    assert path_of(page) == "/admin/rules"
    expect(page.locator(".flash.success")).to_be_visible()
    expect(rule_row(page, subject, path, methods)).to_have_count(1)


def delete_rule(page: Page, base: str, subject: str, path: str, methods: str) -> None:
    """Delete a rule through its row's "delete" link and the confirmation page."""
    page.goto(f"{base}/admin/rules")
    row = rule_row(page, subject, path, methods)
    expect(row).to_have_count(1)
    with page.expect_navigation():
        row.locator("a.delete").click()
    assert path_of(page) != "/admin/rules"  # a confirmation page first, nothing deleted yet
    expect(page.locator("button#confirm")).to_be_visible()
    with page.expect_navigation():
        page.click("button#confirm")
    assert path_of(page) == "/admin/rules"
    expect(page.locator(".flash.success")).to_be_visible()
    expect(rule_row(page, subject, path, methods)).to_have_count(0)


def effective_roles(page: Page) -> set[str]:
    return {t.strip() for t in page.locator("#effective-roles .tag").all_inner_texts()}


# -- the scenarios of the issue ---------------------------------------------------------


def test_a_rule_added_in_the_editor_governs_the_next_request_and_stops_when_deleted(
    new_page: Callable[[], Page], live_server: str
) -> None:
    user = logged_in(new_page, live_server, USER, USER_PASSWORD)  # before the change
    assert status_of(user, f"{live_server}/admin/") == 403

    admin = logged_in(new_page, live_server, ADMIN, ADMIN_PASSWORD)
    add_rule(admin, live_server, "user", "/admin/", "GET", "allow")

    assert status_of(user, f"{live_server}/admin/") == 200
    expect(user.locator("main")).to_contain_text("Policy revision")
    expect(user.locator("#who")).to_have_text(USER)  # the same session, no new login

    delete_rule(admin, live_server, "user", "/admin/", "GET")

    assert status_of(user, f"{live_server}/admin/") == 403
    expect(user.locator(".detail")).to_contain_text("may not GET /admin/")


def test_a_role_assigned_on_the_users_page_opens_the_admin_page(
    new_page: Callable[[], Page], live_server: str
) -> None:
    user = logged_in(new_page, live_server, USER, USER_PASSWORD)
    assert status_of(user, f"{live_server}/admin/") == 403

    admin = logged_in(new_page, live_server, ADMIN, ADMIN_PASSWORD)
    admin.goto(f"{live_server}/admin/users")
    row = admin.locator(f'#users tr.user[data-email="{USER}"]')
    expect(row).to_have_count(1)
    expect(admin.locator(f'#users tr.user[data-email="{ADMIN}"]')).to_have_count(1)
    shot(admin, "admin-users")
    with admin.expect_navigation():
        row.locator("a.user-link").click()
    assert path_of(admin) == f"/admin/users/{USER}"
    assert effective_roles(admin) >= {"user", "anonymous"}
    assert "admin" not in effective_roles(admin)

    admin.select_option("select[name=role]", "admin")
    with admin.expect_navigation():
        admin.click("button#assign")
    expect(admin.locator(".flash.success")).to_be_visible()
    assert path_of(admin) == f"/admin/users/{USER}"
    assert "admin" in effective_roles(admin)
    shot(admin, "admin-user-detail")

    assert status_of(user, f"{live_server}/admin/") == 200
    expect(user.locator("main")).to_contain_text("Policy revision")

    # Take it away again: the remove button asks for confirmation first.
    admin_role = admin.locator("li").filter(has=admin.locator(".tag", has_text=exactly("admin")))
    with admin.expect_navigation():
        admin_role.locator("button.remove-role").click()
    expect(admin.locator("button#confirm")).to_be_visible()
    assert status_of(user, f"{live_server}/admin/") == 200  # not yet removed
    with admin.expect_navigation():
        admin.click("button#confirm")
    expect(admin.locator(".flash.success")).to_be_visible()
    assert path_of(admin) == f"/admin/users/{USER}"
    assert "admin" not in effective_roles(admin)

    assert status_of(user, f"{live_server}/admin/") == 403


def test_try_a_request_shows_the_verdict_and_the_deciding_rule(
    new_page: Callable[[], Page], live_server: str
) -> None:
    admin = logged_in(new_page, live_server, ADMIN, ADMIN_PASSWORD)
    admin.goto(f"{live_server}/admin/try")

    def decide(subject: str, path: str, method: str) -> None:
        admin.fill("input[name=subject]", subject)
        admin.fill("input[name=path]", path)
        admin.fill("input[name=method]", method)
        with admin.expect_navigation():
            admin.click("button#try")
        assert path_of(admin) == "/admin/try"

    decide(USER, "/", "GET")
    expect(admin.locator("#verdict")).to_have_text(exactly("allow"))
    expect(admin.locator("#rule")).to_have_text(exactly("p, user, /, GET, allow"))
    shot(admin, "admin-try")

    decide(USER, "/admin/", "GET")
    expect(admin.locator("#verdict")).to_have_text(exactly("deny"))
    expect(admin.locator("#rule")).to_have_text(exactly("no rule matched"))

    decide(ADMIN, "/admin/", "GET")
    expect(admin.locator("#verdict")).to_have_text(exactly("allow"))
    expect(admin.locator("#rule")).to_have_text(exactly("p, admin, /admin/*, .*, allow"))


# -- the pages --------------------------------------------------------------------------


def test_the_rules_page_lists_and_searches_the_rules(
    new_page: Callable[[], Page], live_server: str
) -> None:
    admin = logged_in(new_page, live_server, ADMIN, ADMIN_PASSWORD)
    admin.goto(f"{live_server}/admin/rules")
    expect(admin.locator("#rules tr.rule")).to_have_count(DEFAULT_P_ROWS)
    expect(admin.locator("#rules tr.rule.deny")).to_have_count(0)
    expect(rule_row(admin, "user", "/", "GET")).to_have_count(1)

    admin.fill("input[name=q]", "anonymous")
    with admin.expect_navigation():
        admin.press("input[name=q]", "Enter")
    assert parse_qs(urlsplit(admin.url).query).get("q") == ["anonymous"]  # a GET search
    rows = admin.locator("#rules tr.rule")
    # login, register, static, favicon, verify, password, register/*, healthz, readyz,
    # openapi.json
    expect(rows).to_have_count(10)
    for subject in rows.locator("td:nth-child(1)").all_inner_texts():
        assert subject.strip() == "anonymous"


def test_a_deny_rule_is_added_shown_as_deny_and_deleted_after_confirmation(
    new_page: Callable[[], Page], live_server: str
) -> None:
    admin = logged_in(new_page, live_server, ADMIN, ADMIN_PASSWORD)
    add_rule(admin, live_server, "user", "/reports/*", "POST|DELETE", "deny")
    row = rule_row(admin, "user", "/reports/*", "POST|DELETE")
    expect(row).to_have_class(re.compile(r"\bdeny\b"))
    expect(row).to_contain_text("DENY")
    expect(admin.locator("#rules tr.rule")).to_have_count(DEFAULT_P_ROWS + 1)
    expect(admin.locator("#rules tr.rule.deny")).to_have_count(1)
    shot(admin, "admin-rules")

    delete_rule(admin, live_server, "user", "/reports/*", "POST|DELETE")
    expect(admin.locator("#rules tr.rule")).to_have_count(DEFAULT_P_ROWS)
    expect(admin.locator("#rules tr.rule.deny")).to_have_count(0)


def test_an_invalid_rule_is_refused_next_to_its_field(
    new_page: Callable[[], Page], live_server: str
) -> None:
    admin = logged_in(new_page, live_server, ADMIN, ADMIN_PASSWORD)
    admin.goto(f"{live_server}/admin/rules/new")

    fill_rule_form(admin, "user", "/reports/*", "GET(", "allow")  # a regex that does not compile
    assert path_of(admin) == "/admin/rules/new"
    expect(admin.locator("input[name=methods] ~ .error")).to_have_count(1)
    expect(admin.locator("input[name=subject] + .error")).to_have_count(0)
    expect(admin.locator("input[name=path] + .error")).to_have_count(0)
    expect(admin.locator("input[name=methods]")).to_have_value("GET(")  # input kept
    expect(admin.locator(".flash.success")).to_have_count(0)
    shot(admin, "admin-rule-form-error")

    fill_rule_form(admin, "user", "", "GET", "allow")  # no path
    expect(admin.locator("input[name=path] + .error")).to_have_count(1)
    expect(admin.locator("input[name=methods] + .error")).to_have_count(0)

    admin.goto(f"{live_server}/admin/rules")
    expect(admin.locator("#rules tr.rule")).to_have_count(DEFAULT_P_ROWS)
    expect(rule_row(admin, "user", "/reports/*", "GET(")).to_have_count(0)


def test_the_roles_page_shows_the_inheritance(
    new_page: Callable[[], Page], live_server: str
) -> None:
    admin = logged_in(new_page, live_server, ADMIN, ADMIN_PASSWORD)
    assert status_of(admin, f"{live_server}/admin/roles") == 200
    expect(admin.get_by_role("heading", name="Roles")).to_be_visible()
    names = [t.split()[0] for t in admin.locator("#role-tree li").all_inner_texts() if t.strip()]
    # g, user, anonymous and g, admin, user: anonymous at the top, then user, then admin.
    assert names[:3] == ["anonymous", "user", "admin"], names
    shot(admin, "admin-roles")


def test_the_audit_log_shows_the_newest_change_first(
    new_page: Callable[[], Page], live_server: str
) -> None:
    admin = logged_in(new_page, live_server, ADMIN, ADMIN_PASSWORD)
    add_rule(admin, live_server, "user", "/reports/*", "GET", "allow")
    assert status_of(admin, f"{live_server}/admin/audit") == 200
    entries = admin.locator("#audit tbody tr")
    expect(entries.first).to_contain_text("p, user, /reports/*, GET, allow")
    expect(entries.first).to_contain_text(ADMIN)
    expect(entries.first.locator("td:nth-child(3)")).to_have_text(exactly("web"))
    assert entries.count() >= 2  # the test app's own set-up is audited too
    revisions = [int(t) for t in entries.locator("td:last-child").all_inner_texts()]
    assert revisions == sorted(revisions, reverse=True), revisions
    assert revisions[0] > revisions[-1]
    shot(admin, "admin-audit")
