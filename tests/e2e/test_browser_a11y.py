"""Accessibility in a real browser: axe-core on every page at 1280 and 390 px, and reflow.

axe-core (the npm package, ``node_modules/axe-core``) is injected into each page and run
with the WCAG 2.0, 2.1 and 2.2 A and AA rules; any violation fails the test, listed with
its rule id, its help text and the nodes it found. At 390 px the page itself must not
scroll sideways (wide tables stack as one card per row), and neither at 320 px (WCAG
1.4.10's reflow width); a logged-in visitor's Log out button must be on screen.

The pages are visited by three visitors (anonymous, a plain user, an admin) of one app
served for the whole module; the pages that need data (an inactive account, a token,
audit entries) get it once, through the web forms, before the first visit.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser
from playwright.sync_api import BrowserContext
from playwright.sync_api import Page
from playwright.sync_api import expect

from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.e2e.conftest import TIMEOUT_MS
from tests.e2e.conftest import login
from tests.e2e.conftest import serve

REPO = Path(__file__).resolve().parents[2]
#: The axe-core build injected into each page (``npm ci`` installs it).
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
#: The rule sets run: WCAG 2.0, 2.1 and 2.2, levels A and AA.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}
#: WCAG 1.4.10's reflow width: 1280 px at 400 % zoom.
NARROWEST = {"width": 320, "height": 640}
#: A third account, deactivated before the visits: the users list shows an inactive row.
INACTIVE = "old@example.com"
INACTIVE_PASSWORD = "old-password-1"

#: The axe checks need the npm package; the other tests of this module do not.
needs_axe = pytest.mark.skipif(
    not AXE.exists(), reason=f"{AXE} is missing (run `npm ci` in the repository)"
)

_names = itertools.count(1)


def submit(selector: str) -> Callable[[Page], None]:
    """An action: click the submit button ``selector`` and wait for the answer."""

    def act(page: Page) -> None:
        with page.expect_navigation():
            page.click(selector)

    return act


def fill_and_submit(fields: dict[str, str], selector: str) -> Callable[[Page], None]:
    """An action: fill the fields named in ``fields``, then submit with ``selector``."""

    def act(page: Page) -> None:
        for name, value in fields.items():
            page.fill(f"main [name={name}]", value)
        submit(selector)(page)

    return act


def create_token(page: Page) -> None:
    """An action: create a token with a name no earlier visit used."""
    fill_and_submit({"name": f"visit-{next(_names)}"}, "#create-token")(page)


def rule_conflict(page: Page) -> None:
    """An action from /admin/rules/new: add a rule, open its edit form, change the rule
    behind the form's back, then save the form: the conflict page, both versions shown."""
    path = f"/conflict-{next(_names)}"
    fill_and_submit({"subject": "user", "path": path, "methods": "GET"}, "#save")(page)
    page.goto(page.url.split("/admin/")[0] + f"/admin/rules?q={path}")
    with page.expect_navigation():
        page.locator("#rules a", has_text="edit").first.click()
    token = page.locator("input[name=csrf_token]").first.input_value()
    revision = page.locator("input[name=revision]").first.input_value()
    changed = page.request.post(
        page.url,
        form={
            "csrf_token": token,
            "revision": revision,
            "subject": "user",
            "path": path,
            "methods": "GET|POST",
            "effect": "allow",
        },
        max_redirects=0,
    )
    assert changed.status == 302, changed.status
    page.fill("main [name=path]", f"{path}-mine")
    submit("#save")(page)
    assert page.locator("#conflict").count() == 1


def preview_rule(page: Page) -> None:
    """An action from /admin/rules/new: preview a rule; the what-if under the form."""
    fields = {"subject": "user", "path": "/reports/:id", "methods": "POST"}
    fill_and_submit(fields, "#preview")(page)
    expect(page.locator("#whatif")).to_be_visible()


def refused_rule(page: Page) -> None:
    """An action from /admin/rules/new: a rule the stored test refuses; the refusal shown."""
    fill_and_submit({"subject": "anonymous", "path": "/admin/*", "methods": "GET"}, "#save")(page)
    expect(page.locator("#refused")).to_be_visible()


def refused_test(page: Page) -> None:
    """An action from /admin/tests: a test the policy does not keep; the refusal shown."""
    fields = {"subject": "user", "method": "GET", "path": "/admin/rules", "note": "no"}
    fill_and_submit(fields, "#add-test")(page)
    expect(page.locator("#refused")).to_be_visible()


@dataclass(frozen=True)
class Visit:
    """One page to check: who opens it, where, the status it answers, an action after."""

    name: str
    who: str
    path: str
    status: int = 200
    then: Callable[[Page], None] | None = None


VISITS = [
    # Anyone: the forms and pages reached without an account.
    Visit("login", "anonymous", "/login"),
    Visit("login-empty", "anonymous", "/login", then=submit("main form button[type=submit]")),
    Visit(
        "login-wrong",
        "anonymous",
        "/login",
        then=fill_and_submit(
            {"email": USER, "password": "not-the-password"}, "main form button[type=submit]"
        ),
    ),
    Visit("register", "anonymous", "/register"),
    Visit(
        "register-errors",
        "anonymous",
        "/register",
        then=fill_and_submit({"password": "a"}, "main form button[type=submit]"),
    ),
    Visit("forgot", "anonymous", "/password/forgot"),
    Visit(
        "forgot-sent",
        "anonymous",
        "/password/forgot",
        then=fill_and_submit({"email": USER}, "main form button[type=submit]"),
    ),
    Visit("reset-link-invalid", "anonymous", "/password/reset/not-a-token", status=400),
    Visit("verify-link-invalid", "anonymous", "/verify/not-a-token", status=400),
    # A plain user: home, account, and the answers to what they may not open.
    Visit("home", "user", "/"),
    Visit("account", "user", "/account"),
    Visit("account-errors", "user", "/account", then=submit("#change-password button")),
    Visit("verify-sent", "user", "/verify/sent"),
    Visit("logout-confirm", "user", "/logout"),
    Visit("forbidden", "user", "/admin/", status=403),
    Visit("forbidden-unknown-path", "user", "/no-such-page", status=403),
    # An admin: every page of the policy editor, its forms and its confirmations.
    Visit("admin", "admin", "/admin/"),
    Visit("rules", "admin", "/admin/rules"),
    Visit("rules-search", "admin", "/admin/rules?q=admin"),
    Visit("rule-new", "admin", "/admin/rules/new"),
    Visit("rule-new-errors", "admin", "/admin/rules/new", then=submit("#save")),
    Visit("rule-edit", "admin", "/admin/rules/{rule}/edit"),
    Visit("rule-delete", "admin", "/admin/rules/{rule}/delete"),
    Visit("rule-conflict", "admin", "/admin/rules/new", then=rule_conflict),
    Visit("roles", "admin", "/admin/roles"),
    Visit("role-new", "admin", "/admin/roles/new"),
    Visit("role-new-errors", "admin", "/admin/roles/new", then=submit("#create-role")),
    Visit("role", "admin", "/admin/roles/admin"),
    Visit("users", "admin", "/admin/users"),
    Visit("user-new", "admin", "/admin/users/new"),
    Visit("user-new-errors", "admin", "/admin/users/new", then=submit("#create-user")),
    Visit("user-password", "admin", f"/admin/users/{USER}/password"),
    Visit(
        "user-password-errors",
        "admin",
        f"/admin/users/{USER}/password",
        then=submit("#save-password"),
    ),
    Visit("user", "admin", f"/admin/users/{USER}"),
    Visit("user-inactive", "admin", f"/admin/users/{INACTIVE}"),
    Visit("user-deactivate", "admin", f"/admin/users/{USER}/active"),
    Visit("user-activate", "admin", f"/admin/users/{INACTIVE}/active"),
    Visit("user-end-sessions", "admin", f"/admin/users/{USER}/sessions/end"),
    Visit("user-remove-role", "admin", f"/admin/users/{USER}/roles/user/remove"),
    Visit("tokens", "admin", "/admin/tokens"),
    Visit("tokens-errors", "admin", "/admin/tokens", then=submit("#create-token")),
    Visit("token-created", "admin", "/admin/tokens", then=create_token),
    Visit("token-revoke", "admin", "/admin/tokens/deploy/revoke"),
    Visit("audit", "admin", "/admin/audit"),
    Visit("audit-filtered", "admin", f"/admin/audit?actor={ADMIN}&since=2000-01-01"),
    Visit("audit-bad-date", "admin", "/admin/audit?since=yesterday", status=400),
    Visit("tests", "admin", "/admin/tests"),
    Visit("tests-failing", "admin", "/admin/tests?failing=1&q=nothing-matches"),
    Visit("tests-add-errors", "admin", "/admin/tests", then=submit("#add-test")),
    Visit("tests-add-refused", "admin", "/admin/tests", then=refused_test),
    Visit("tests-load-errors", "admin", "/admin/tests", then=submit("#load-tests")),
    Visit("test-remove", "admin", "/admin/tests/remove?id={test}"),
    Visit("rule-preview", "admin", "/admin/rules/new", then=preview_rule),
    Visit("rule-refused", "admin", "/admin/rules/new", then=refused_rule),
    Visit("try", "admin", "/admin/try"),
    Visit("try-decided", "admin", f"/admin/try?subject={USER}&path=/admin/&method=GET"),
    Visit("reach", "admin", "/admin/reach?path=/admin/rules&method=GET"),
    Visit("invite", "admin", "/admin/invite"),
    Visit("invite-errors", "admin", "/admin/invite", then=submit("main form button")),
    Visit("not-found", "admin", "/admin/no-such-page", status=404),
]


@dataclass
class Site:
    """The module's app: its base URL, one logged-in page per visitor, ids found at setup."""

    base: str
    pages: dict[str, Page]
    ids: dict[str, str] = field(default_factory=dict)


def _context(browser: Browser) -> BrowserContext:
    # The pages' CSP allows only same-origin scripts; Playwright injects axe-core inline.
    context = browser.new_context(viewport=WIDE, bypass_csp=True)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def _prepare(base: str, admin: Page, spare: Page) -> None:
    """Give the pages something to show: an inactive account, a token, audit entries."""
    spare.goto(f"{base}/register")
    spare.fill("main [name=email]", INACTIVE)
    spare.fill("main [name=password]", INACTIVE_PASSWORD)
    spare.fill("main [name=confirm]", INACTIVE_PASSWORD)
    submit("main form button[type=submit]")(spare)
    admin.goto(f"{base}/admin/users/{INACTIVE}/active")
    submit("#confirm")(admin)
    admin.goto(f"{base}/admin/tokens")
    fill_and_submit({"name": "deploy"}, "#create-token")(admin)
    expect(admin.locator("#secret")).to_be_visible()
    # A policy test, for the tests page and the refusals of the rule form.
    admin.goto(f"{base}/admin/tests")
    admin.select_option("main [name=outcome]", "deny")
    fields = {"subject": "anonymous", "method": "GET", "path": "/admin/", "note": "no visitors"}
    fill_and_submit(fields, "#add-test")(admin)
    expect(admin.locator("#tests tr.test")).to_have_count(1)


@pytest.fixture(scope="module")
def site(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One served app for the module, with an anonymous, a user and an admin visitor."""
    with serve(tmp_path_factory.mktemp("a11y")) as base:
        contexts = [_context(browser) for _ in range(4)]
        anonymous, user, admin, spare = (c.new_page() for c in contexts)
        login(user, base, USER, USER_PASSWORD)
        login(admin, base, ADMIN, ADMIN_PASSWORD)
        _prepare(base, admin, spare)
        admin.goto(f"{base}/admin/rules")
        rule_id = admin.locator("#rules tr.rule").first.get_attribute("data-id")
        assert rule_id
        admin.goto(f"{base}/admin/tests")
        test_id = admin.locator("#tests tr.test").first.get_attribute("data-id")
        assert test_id
        try:
            yield Site(
                base,
                {"anonymous": anonymous, "user": user, "admin": admin},
                {"rule": rule_id, "test": test_id},
            )
        finally:
            for context in contexts:
                context.close()


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Run axe-core on the page with the WCAG A and AA rule sets; its violations."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        """tags => axe.run(document, {
            runOnly: {type: 'tag', values: tags}, resultTypes: ['violations'],
        })""",
        AXE_TAGS,
    )
    return list(result["violations"])


def describe(violations: list[dict[str, Any]]) -> str:
    """Each violation's id, impact and help, and each node it names with what is wrong."""
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} [{v['helpUrl']}]")
        for node in v["nodes"]:
            summary = " ".join((node.get("failureSummary") or "").split())
            lines.append(f"    {' '.join(map(str, node['target']))}: {summary[:300]}")
    return "\n".join(lines)


def page_width(page: Page) -> int:
    """How wide the document is, in CSS pixels (more than the viewport: it scrolls sideways)."""
    return int(page.evaluate("() => document.documentElement.scrollWidth"))


def open_visit(site: Site, visit: Visit, viewport: dict[str, int]) -> Page:
    """Open the visit's page at the viewport and run its action; the page."""
    page = site.pages[visit.who]
    page.set_viewport_size(viewport)
    response = page.goto(site.base + visit.path.format(**site.ids))
    assert response is not None
    assert response.status == visit.status, f"{visit.path}: {response.status}"
    if visit.then is not None:
        visit.then(page)
    return page


@needs_axe
@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1280px", "390px"])
@pytest.mark.parametrize("visit", VISITS, ids=[v.name for v in VISITS])
def test_no_axe_violation(site: Site, visit: Visit, viewport: dict[str, int]) -> None:
    page = open_visit(site, visit, viewport)
    violations = axe_violations(page)
    assert not violations, f"{page.url} at {viewport['width']} px:\n{describe(violations)}"


@pytest.mark.parametrize("viewport", [NARROW, NARROWEST], ids=["390px", "320px"])
@pytest.mark.parametrize("visit", VISITS, ids=[v.name for v in VISITS])
def test_the_page_reflows(site: Site, visit: Visit, viewport: dict[str, int]) -> None:
    page = open_visit(site, visit, viewport)
    width = page_width(page)
    assert width <= viewport["width"], f"{page.url} is {width} px wide at {viewport['width']} px"
    if visit.who != "anonymous":
        box = page.locator("#logout").bounding_box()
        assert box is not None, "no Log out button"
        assert 0 <= box["x"] and box["x"] + box["width"] <= viewport["width"], box


# -- navigation the policy allows ---------------------------------------------------------


def nav_links(page: Page, label: str) -> list[str]:
    """The names of the links and buttons of the navigation landmark named ``label``."""
    nav = page.get_by_role("navigation", name=label)
    return [
        " ".join(item.inner_text().split())
        for item in nav.locator("a, button").all()
        if item.is_visible()
    ]


def test_a_plain_user_sees_no_admin_link_and_an_admin_does(site: Site) -> None:
    user, admin = site.pages["user"], site.pages["admin"]
    user.set_viewport_size(WIDE)
    admin.set_viewport_size(WIDE)
    user.goto(f"{site.base}/")
    admin.goto(f"{site.base}/")
    assert nav_links(user, "Site") == ["Authz", "Home", "Account", "Log out"]
    assert nav_links(admin, "Site") == ["Authz", "Home", "Admin", "Account", "Log out"]
    expect(user.get_by_role("link", name="Admin", exact=True)).to_have_count(0)


def test_an_anonymous_visitor_sees_log_in_and_register(site: Site) -> None:
    page = site.pages["anonymous"]
    page.set_viewport_size(WIDE)
    page.goto(f"{site.base}/login")
    assert nav_links(page, "Site") == ["Log in", "Register"]


def test_the_current_page_is_marked_in_both_navigations(site: Site) -> None:
    page = site.pages["admin"]
    page.set_viewport_size(WIDE)
    page.goto(f"{site.base}/admin/users")
    site_nav = page.get_by_role("navigation", name="Site")
    editor_nav = page.get_by_role("navigation", name="Policy editor")
    expect(editor_nav.locator("[aria-current=page]")).to_have_text("Users")
    expect(site_nav.locator("[aria-current]")).to_have_text("Admin")
    expect(editor_nav.locator("[aria-current]")).to_have_count(1)


def test_the_forbidden_page_keeps_the_navigation_and_says_why(site: Site) -> None:
    page = site.pages["user"]
    page.set_viewport_size(WIDE)
    response = page.goto(f"{site.base}/admin/")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", level=1)).to_contain_text("Forbidden")
    assert nav_links(page, "Site") == ["Authz", "Home", "Account", "Log out"]
    expect(page.get_by_role("main")).to_contain_text("no page serves")


# -- keyboard and errors ------------------------------------------------------------------


def test_the_first_tab_stop_is_the_skip_link_to_the_main_content(site: Site) -> None:
    page = site.pages["admin"]
    page.set_viewport_size(WIDE)
    page.goto(f"{site.base}/admin/rules")
    page.keyboard.press("Tab")
    focused = page.locator(":focus")
    expect(focused).to_have_text("Skip to main content")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    # The next stop is inside main, past both navigations.
    assert page.evaluate("() => document.querySelector('main').contains(document.activeElement)")


def test_a_failed_submit_focuses_the_first_invalid_field_and_describes_each(
    new_page: Callable[[], Page], live_server: str
) -> None:
    # A context that keeps the CSP: the focus script must run under it.
    page = new_page()
    login(page, live_server, ADMIN, ADMIN_PASSWORD)
    page.goto(f"{live_server}/admin/rules/new")
    page.fill("input[name=methods]", "")
    with page.expect_navigation():
        page.click("#save")
    expect(page.locator(":focus")).to_have_attribute("name", "subject")
    invalid = page.locator("main [aria-invalid=true]")
    expect(invalid).to_have_count(3)  # subject, path and methods: every error at once
    for name in ("subject", "path", "methods"):
        box = page.locator(f"main [name={name}]")
        expect(box).to_have_accessible_description(re.compile("required", re.IGNORECASE))


def test_edit_and_delete_links_are_named_for_their_row(site: Site) -> None:
    page = site.pages["admin"]
    page.set_viewport_size(WIDE)
    page.goto(f"{site.base}/admin/rules?q=/admin/*")
    expect(page.get_by_role("link", name="edit rule admin, /admin/*, .*, allow")).to_have_count(1)
    expect(page.get_by_role("link", name="delete rule admin, /admin/*, .*, allow")).to_have_count(1)


def test_the_role_picker_starts_empty_and_never_offers_anonymous(site: Site) -> None:
    page = site.pages["admin"]
    page.set_viewport_size(WIDE)
    page.goto(f"{site.base}/admin/users/{INACTIVE}")
    picker = page.get_by_label("Assign a role")
    expect(picker).to_have_value("")
    options = [" ".join(o.split()) for o in picker.locator("option").all_inner_texts()]
    assert options[0] == "Choose a role"
    assert "anonymous" not in options
    assert "admin" in options


def test_a_refused_login_focuses_its_error_message(page: Page, live_server: str) -> None:
    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", USER)
    page.fill("input[name=password]", "not-the-password")
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    focused = page.locator(":focus")
    expect(focused).to_have_class(re.compile(r"\bflash error\b"))
    expect(focused).to_have_attribute("role", "alert")
