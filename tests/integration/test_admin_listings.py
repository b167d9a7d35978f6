"""Admin pages and API lists read from the snapshot's indexes: complete and correct after
writes, paged where a list can be long (role members, accounts, rules, who can reach)."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authz import Change
from authz import Rule
from service import users
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import bearer
from tests.conftest import make_token

TEAM = [f"member{i:03}@example.com" for i in range(120)]


@pytest.fixture
def admin(client: FlaskClient, auth: AuthActions) -> FlaskClient:
    auth.login(ADMIN, ADMIN_PASSWORD)
    return client


def apply(app: Flask, add: list[Rule] = (), remove: list[Rule] = ()) -> None:  # type: ignore[assignment]
    app.extensions["authz"].apply(
        Change(add=tuple(add), remove=tuple(remove)), actor="t", source="cli"
    )


def scanned(app: Flask, ptype: str) -> list[Rule]:
    return [r for r in app.extensions["authz"].rules() if r.ptype == ptype]


def test_api_rule_pages_follow_policy_order_through_writes(app: Flask) -> None:
    """Page by page, the API lists what a scan of the rows lists, after adds and removals."""
    headers = bearer(make_token(app))
    client = app.test_client()
    many = [Rule.of("p", "reader", f"/docs/{i}", "GET", "allow") for i in range(30)]
    apply(app, many)
    apply(app, [Rule.of("p", "reader", "/late", "GET", "deny")], [many[3], many[17]])
    apply(app, [many[3]])  # back again, now last
    for ptype, url, key in (
        ("p", "/api/v1/policy/rules", "path"),
        ("g", "/api/v1/policy/roles", "role"),
    ):
        rows = scanned(app, ptype)
        listed = []
        for page in range(1, len(rows) // 7 + 3):
            body = client.get(f"{url}?per_page=7&page={page}", headers=headers).json
            assert body["total"] == len(rows)
            listed += [item[key] for item in body["items"]]
        assert listed == [r.values[1] for r in rows]
    body = client.get("/api/v1/policy/rules?q=DOCS/1&per_page=200", headers=headers).json
    expected = [r.values[1] for r in scanned(app, "p") if "docs/1" in r.values[1]]
    assert body["total"] == len(expected) and [i["path"] for i in body["items"]] == expected
    gone = client.get(f"/api/v1/policy/rules/{many[17].id}", headers=headers)
    assert gone.status_code == 404
    back = client.get(f"/api/v1/policy/rules/{many[3].id}", headers=headers)
    assert back.json["rule"]["path"] == "/docs/3"


def test_the_roles_page_counts_members_and_the_role_page_pages_them(
    app: Flask, admin: FlaskClient
) -> None:
    apply(
        app,
        [Rule.of("g", email, "team") for email in TEAM]
        + [Rule.of("p", "team", "/t/*", "GET", "allow")],
    )
    roles = admin.get("/admin/roles").get_data(as_text=True)
    assert re.search(r">team</a>\s*<small>120 direct member\(s\)</small>", roles)
    first = admin.get("/admin/roles/team").get_data(as_text=True)
    assert "120 direct member(s), page 1 of 3" in first
    assert TEAM[0] in first and TEAM[49] in first and TEAM[50] not in first
    last = admin.get("/admin/roles/team?page=3").get_data(as_text=True)
    assert TEAM[119] in last and TEAM[99] not in last
    apply(app, remove=[Rule.of("g", TEAM[0], "team")])
    assert "119 direct member(s)" in admin.get("/admin/roles/team").get_data(as_text=True)


def test_the_users_page_is_paged_by_the_database(app: Flask, admin: FlaskClient) -> None:
    with app.app_context():
        for email in TEAM[:60]:
            users.create(email, "a long enough password 1", actor="t", source="cli")
    page = admin.get("/admin/users").get_data(as_text=True)
    assert page.count('<tr class="user') == 50 and "page 1 of 2" in page
    last = admin.get("/admin/users?page=99").get_data(as_text=True)  # past the end: the last
    assert "page 2 of 2" in last and last.count('<tr class="user') == 62 - 50
    found = admin.get("/admin/users?q=MEMBER05").get_data(as_text=True)
    assert found.count('<tr class="user') == 10


def reach_users(html: str) -> list[str]:
    block = re.search(r'<span id="reach-users">(.*?)</span>\s*\n', html, re.S)
    assert block
    return re.findall(r'<span class="tag">([^<]+)</span>', block.group(1))


def test_who_can_reach_agrees_with_deciding_for_every_account(
    app: Flask, admin: FlaskClient
) -> None:
    """Candidates come from the index; the answer is what deciding for everyone gives:
    a deny row still wins, a deactivated account is left out, roles inherit."""
    with app.app_context():
        for email in TEAM[:6]:
            users.create(email, "a long enough password 1", actor="t", source="cli")
        users.set_active(TEAM[5], False, actor="t", source="cli")
    apply(
        app,
        [
            Rule.of("p", "team", "/reports/*", "GET", "allow"),
            Rule.of("g", "subteam", "team"),
            *(Rule.of("g", email, "team") for email in TEAM[:2]),
            Rule.of("g", TEAM[2], "subteam"),
            Rule.of("p", TEAM[3], "/reports/:id", "GET", "allow"),
            Rule.of("p", TEAM[1], "/reports/7", "GET", "deny"),
            Rule.of("g", TEAM[5], "team"),
        ],
    )
    html = admin.get("/admin/reach?path=/reports/7&method=GET").get_data(as_text=True)
    with app.app_context():
        engine = users.engine()
        everyone = [u.email for u in users.list_users() if u.active]
        expected = [e for e in everyone if engine.decide(e, "/reports/7", "GET").allowed]
    assert expected == [TEAM[0], TEAM[2], TEAM[3]]
    assert reach_users(html) == expected
    roles = re.search(r'<span id="reach-roles">(.*?)</span>\s*</p>', html, re.S)
    assert roles and "subteam" in roles.group(1) and ">team<" in roles.group(1)


def test_rules_matching_no_route_are_counted_and_the_first_listed(
    app: Flask, admin: FlaskClient
) -> None:
    apply(app, [Rule.of("p", "user", f"/nowhere/{i}", "GET", "allow") for i in range(70)])
    html = admin.get("/admin/reach").get_data(as_text=True)
    count = re.search(r"(\d+) rule\(s\) match no route", html)
    assert count and int(count.group(1)) >= 70
    assert "/nowhere/0" in html and "/nowhere/69" not in html  # the first 50 only


def test_a_user_page_lists_effective_permissions_in_policy_order(
    app: Flask, admin: FlaskClient
) -> None:
    apply(app, [Rule.of("p", USER, "/mine", "GET", "allow")])
    html = admin.get(f"/admin/users/{USER}").get_data(as_text=True)
    with app.app_context():
        expected = users.effective_rules(USER)
        names = {USER, *users.engine().roles_for(USER)}
    scan = [r for r in scanned(app, "p") if r.values[0] in names]
    assert expected == scan
    positions = [html.index(f"<code>{r.values[1]}</code>") for r in scan]
    assert positions == sorted(positions)
