"""Service tokens in a real browser: create one from the admin navigation, see its secret
once, use it as a bearer credential, revoke it after confirming, and see it refused.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable

from playwright.sync_api import Page
from playwright.sync_api import expect

from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.e2e.conftest import login
from tests.e2e.conftest import shot


def bearer_status(base: str, secret: str) -> int:
    """The status of a bearer request to the API, outside the browser (a program's call)."""
    request = urllib.request.Request(  # noqa: S310 - a fixed http URL of the test server
        f"{base}/api/v1/tokens", headers={"Authorization": f"Bearer {secret}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_create_a_token_see_its_secret_once_and_revoke_it(
    live_server: str, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    login(page, live_server, ADMIN, ADMIN_PASSWORD)
    page.goto(f"{live_server}/admin/rules")
    with page.expect_navigation():
        page.get_by_role("link", name="Service tokens").click()
    expect(page.get_by_role("heading", name="Service tokens", level=1)).to_be_visible()

    page.get_by_label("Name").fill("deploy")
    page.get_by_role("group", name="Roles").get_by_label("admin", exact=True).check()
    page.get_by_label(re.compile("Expires after")).fill("30")
    with page.expect_navigation():
        page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("alert")).to_contain_text("not shown again")
    field = page.get_by_label("Secret of token:deploy")
    secret = field.input_value()
    assert re.fullmatch(r"authz_[A-Za-z0-9_-]{43}", secret)
    assert field.get_attribute("readonly") is not None
    shot(page, "token-created")
    assert bearer_status(live_server, secret) == 200

    with page.expect_navigation():
        page.get_by_role("link", name=re.compile("back to the service tokens")).click()
    row = page.locator("#tokens tr.token[data-name=deploy]")
    expect(row.locator("td.state")).to_have_text("active")
    assert secret not in page.content()
    with page.expect_navigation():
        row.get_by_role("button", name="Revoke token:deploy").click()
    expect(page.get_by_role("heading", name="Revoke this token?")).to_be_visible()
    with page.expect_navigation():
        page.get_by_role("button", name="Yes, do it").click()
    expect(page.locator(".flash.success")).to_contain_text("Revoked token:deploy")
    expect(row.locator("td.state")).to_contain_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    shot(page, "tokens")
    assert bearer_status(live_server, secret) == 401
