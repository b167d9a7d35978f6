"""The policy editor pages through the Flask test client."""

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
from tests.conftest import csrf_token

HOME = Rule.of("p", "user", "/", "GET", "allow")
PAGES = [
    "/admin/rules",
    "/admin/rules/new",
    f"/admin/rules/{HOME.id}/edit",
    f"/admin/rules/{HOME.id}/delete",
    "/admin/roles",
    "/admin/roles/user",
    "/admin/users",
    f"/admin/users/{USER}",
    "/admin/audit",
    "/admin/try",
    "/admin/reach",
]


@pytest.fixture
def admin(client: FlaskClient, auth: AuthActions) -> FlaskClient:
    auth.login(ADMIN, ADMIN_PASSWORD)
    return client


def state(app: Flask) -> tuple[tuple[Rule, ...], int, int]:
    engine = app.extensions["authz"]
    return engine.rules(), engine.revision, len(engine.store.audit_entries(limit=10_000))


def form_token(client: FlaskClient, path: str) -> tuple[str, str]:
    html = client.get(path).get_data(as_text=True)
    revision = re.search(r'name="revision"[^>]*value="(\d*)"', html)
    return csrf_token(client, path), revision.group(1) if revision else ""


def add_rule(client: FlaskClient, **fields: str) -> object:
    token, revision = form_token(client, "/admin/rules/new")
    data = {"csrf_token": token, "revision": revision, "effect": "allow", **fields}
    return client.post("/admin/rules/new", data=data)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_opens_for_an_admin(admin: FlaskClient, path: str) -> None:
    assert admin.get(path).status_code == 200


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_refused_to_a_plain_user(
    client: FlaskClient, auth: AuthActions, path: str
) -> None:
    auth.login()
    assert client.get(path).status_code == 403


@pytest.mark.parametrize("path", PAGES[:3])
def test_anonymous_visitors_are_sent_to_login(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]


def test_rules_page_searches_filters_and_paginates(app: Flask, admin: FlaskClient) -> None:
    engine = app.extensions["authz"]
    from authz import Change

    many = [Rule.of("p", "reader", f"/docs/{i}", "GET", "allow") for i in range(120)]
    engine.apply(Change(add=tuple(many)), actor="t", source="cli")
    page = admin.get("/admin/rules?subject=reader").get_data(as_text=True)
    assert page.count('class="rule') == 50
    assert "page 1 of 3" in page
    last = admin.get("/admin/rules?subject=reader&page=3").get_data(as_text=True)
    assert last.count('class="rule') == 20
    found = admin.get("/admin/rules?q=/docs/11").get_data(as_text=True)
    assert found.count('class="rule') == 11  # /docs/11 and /docs/110..119


def test_deny_rows_are_shown_distinctly(app: Flask, admin: FlaskClient) -> None:
    add_rule(admin, subject="user", path="/secret", methods="GET", effect="deny")
    html = admin.get("/admin/rules?q=/secret").get_data(as_text=True)
    assert 'class="rule deny"' in html and "DENY" in html


def test_adding_a_rule_governs_the_next_request_and_is_audited(
    app: Flask, admin: FlaskClient
) -> None:
    other = app.test_client()
    AuthActions(other).login()
    assert other.get("/admin/").status_code == 403
    response = add_rule(admin, subject="user", path="/admin/", methods="GET")
    assert response.status_code == 302
    assert "Added rule" in admin.get("/admin/rules").get_data(as_text=True)
    assert other.get("/admin/").status_code == 200
    entry = app.extensions["authz"].store.audit_entries()[0]
    assert (entry.actor, entry.source, entry.action) == (ADMIN, "web", "rule.add")
    assert entry.added == (Rule.of("p", "user", "/admin/", "GET", "allow"),)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"subject": "User", "path": "/x", "methods": "GET"}, "neither a role name"),
        ({"subject": "User@Example.com", "path": "/x", "methods": "GET"}, "write it as"),
        ({"subject": "user", "path": "x", "methods": "GET"}, "must start with"),
        ({"subject": "user", "path": "/x", "methods": "GET|("}, "does not compile"),
        ({"subject": "user", "path": "/", "methods": "GET"}, "already exists"),
    ],
)
def test_invalid_rules_are_refused_next_to_the_field_and_change_nothing(
    app: Flask, admin: FlaskClient, fields: dict[str, str], message: str
) -> None:
    before = state(app)
    response = add_rule(admin, **fields)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert re.search(rf'class="error">[^<]*{re.escape(message)}', html)
    assert state(app) == before


def test_a_write_without_csrf_is_refused(app: Flask, admin: FlaskClient) -> None:
    before = state(app)
    data = {"subject": "user", "path": "/x", "methods": "GET", "effect": "allow"}
    assert admin.post("/admin/rules/new", data=data).status_code == 400
    assert admin.post(f"/admin/rules/{HOME.id}/delete").status_code == 400
    assert state(app) == before


def test_an_unrelated_change_does_not_stale_a_form(app: Flask, admin: FlaskClient) -> None:
    """Forms are checked per row: a rule added, or a user registering, meanwhile is fine."""
    token, revision = form_token(admin, "/admin/rules/new")
    add_rule(admin, subject="user", path="/a", methods="GET")  # someone else's change
    with app.app_context():
        users.register("new@example.com", "new-password-1")
    response = admin.post(
        "/admin/rules/new",
        data={
            "csrf_token": token,
            "revision": revision,
            "subject": "user",
            "path": "/b",
            "methods": "GET",
            "effect": "allow",
        },
    )
    assert response.status_code == 302
    assert Rule.of("p", "user", "/b", "GET", "allow") in app.extensions["authz"].rules()


def edit_form(revision: str, token: str, path: str, methods: str = "GET") -> dict[str, str]:
    return {
        "csrf_token": token,
        "revision": revision,
        "subject": "user",
        "path": path,
        "methods": methods,
        "effect": "allow",
    }


def test_two_admins_editing_one_rule_the_second_sees_both_versions(
    app: Flask, admin: FlaskClient
) -> None:
    path = f"/admin/rules/{HOME.id}/edit"
    token, revision = form_token(admin, path)
    # The first admin saves GET|POST; the second, from a form opened before, types /home.
    assert admin.post(path, data=edit_form(revision, token, "/", "GET|POST")).status_code == 302
    before = state(app)
    response = admin.post(path, data=edit_form(revision, token, "/home"))
    assert response.status_code == 409
    html = response.get_data(as_text=True)
    current = Rule.of("p", "user", "/", "GET|POST", "allow")
    assert re.search(r'id="current">p, user, /, GET\|POST, allow<', html)
    assert re.search(r'id="yours">p, user, /home, GET, allow<', html)
    assert f"by {ADMIN}" in html
    assert 'value="/home"' in html  # what the admin typed is kept
    assert f'action="/admin/rules/{current.id}/edit"' in html
    assert state(app) == before
    # Saving again replaces the current version with theirs.
    again = admin.post(f"/admin/rules/{current.id}/edit", data=edit_form(revision, token, "/home"))
    assert again.status_code == 302
    rules = app.extensions["authz"].rules()
    assert current not in rules and Rule.of("p", "user", "/home", "GET", "allow") in rules


def test_editing_a_rule_another_admin_removed_offers_to_add_it(
    app: Flask, admin: FlaskClient
) -> None:
    path = f"/admin/rules/{HOME.id}/edit"
    token, revision = form_token(admin, path)
    app.extensions["authz"].apply(Change.removing(HOME), actor="other@example.com", source="cli")
    response = admin.post(path, data=edit_form(revision, token, "/home"))
    assert response.status_code == 409
    html = response.get_data(as_text=True)
    assert 'id="current">(removed)<' in html and "by other@example.com" in html
    assert 'action="/admin/rules/new"' in html


def test_a_role_assignment_row_is_not_a_rule_to_edit(app: Flask, admin: FlaskClient) -> None:
    """The rule pages take p rows only: a g row's id is 404 there, never a 500."""
    link = Rule.of("g", USER, "user")
    for page in ("edit", "delete"):
        assert admin.get(f"/admin/rules/{link.id}/{page}").status_code == 404


def test_editing_a_rule_replaces_it_in_one_change(app: Flask, admin: FlaskClient) -> None:
    path = f"/admin/rules/{HOME.id}/edit"
    token, revision = form_token(admin, path)
    response = admin.post(
        path,
        data={
            "csrf_token": token,
            "revision": revision,
            "subject": "user",
            "path": "/",
            "methods": "GET|POST",
            "effect": "allow",
        },
    )
    assert response.status_code == 302
    rules = app.extensions["authz"].rules()
    assert HOME not in rules and Rule.of("p", "user", "/", "GET|POST", "allow") in rules
    entry = app.extensions["authz"].store.audit_entries()[0]
    assert entry.removed == (HOME,) and entry.action == "rule.edit"


def test_deleting_asks_for_confirmation_then_deletes(app: Flask, admin: FlaskClient) -> None:
    path = f"/admin/rules/{HOME.id}/delete"
    page = admin.get(path).get_data(as_text=True)
    assert 'id="confirm"' in page and "p, user, /, GET, allow" in page
    assert HOME in app.extensions["authz"].rules()
    token, revision = form_token(admin, path)
    assert admin.post(path, data={"csrf_token": token, "revision": revision}).status_code == 302
    assert HOME not in app.extensions["authz"].rules()
    assert admin.get(path).status_code == 404


def test_a_rule_that_denies_the_acting_admin_warns_before_applying(
    app: Flask, admin: FlaskClient
) -> None:
    before = state(app)
    response = add_rule(admin, subject="admin", path="/admin/*", methods=".*", effect="deny")
    assert response.status_code == 400
    assert 'id="self-warning"' in response.get_data(as_text=True)
    assert state(app) == before


def test_the_lockout_guard_refuses_removing_the_last_admin(app: Flask, admin: FlaskClient) -> None:
    path = f"/admin/users/{ADMIN}/roles/admin/remove"
    assert "your own access" in admin.get(path).get_data(as_text=True)
    before = state(app)
    token, revision = form_token(admin, path)
    response = admin.post(path, data={"csrf_token": token, "revision": revision})
    assert response.status_code == 302
    assert "no active user could GET /admin/" in admin.get(f"/admin/users/{ADMIN}").get_data(
        as_text=True
    )
    assert state(app) == before


def test_assigning_and_removing_a_role_on_the_users_page(app: Flask, admin: FlaskClient) -> None:
    path = f"/admin/users/{USER}"
    token, revision = form_token(admin, path)
    response = admin.post(
        f"{path}/roles", data={"csrf_token": token, "revision": revision, "role": "admin"}
    )
    assert response.status_code == 302
    assert "admin" in app.extensions["authz"].roles_for(USER)
    html = admin.get(path).get_data(as_text=True)
    assert "now has role admin" in html
    assert re.search(r'id="effective-roles">.*admin', html, re.S)
    remove = f"{path}/roles/admin/remove"
    token, revision = form_token(admin, remove)
    assert admin.post(remove, data={"csrf_token": token, "revision": revision}).status_code == 302
    assert "admin" not in app.extensions["authz"].roles_for(USER)


def test_deactivating_a_user_from_the_users_page(app: Flask, admin: FlaskClient) -> None:
    path = f"/admin/users/{USER}/active"
    html = admin.get(path).get_data(as_text=True)
    assert "Their sessions end at once" in html
    assert re.search(r'name="active" type="hidden" value="0"', html)
    token, _ = form_token(admin, path)
    assert admin.post(path, data={"csrf_token": token, "active": "0"}).status_code == 302
    with app.app_context():
        assert users.get(USER).active is False
    entry = app.extensions["authz"].store.audit_entries()[0]
    assert (entry.action, entry.actor, entry.source) == ("user.deactivate", ADMIN, "web")


def test_confirming_a_deactivation_twice_does_not_reactivate(
    app: Flask, admin: FlaskClient
) -> None:
    """Two admins confirm "Deactivate" from pages shown before either saved: one change."""
    path = f"/admin/users/{USER}/active"
    token, _ = form_token(admin, path)
    for _ in range(2):
        assert admin.post(path, data={"csrf_token": token, "active": "0"}).status_code == 302
    with app.app_context():
        assert users.get(USER).active is False
    actions = [e.action for e in app.extensions["authz"].store.audit_entries(limit=5)]
    assert actions.count("user.deactivate") == 1
    html = admin.get(f"/admin/users/{USER}").get_data(as_text=True)
    assert "already inactive" in html


def test_a_state_form_without_its_state_changes_nothing(app: Flask, admin: FlaskClient) -> None:
    path = f"/admin/users/{USER}/active"
    token, _ = form_token(admin, path)
    before = state(app)
    assert admin.post(path, data={"csrf_token": token}).status_code == 400
    assert state(app) == before


def test_users_page_searches(app: Flask, admin: FlaskClient) -> None:
    html = admin.get("/admin/users?q=user@").get_data(as_text=True)
    assert f'data-email="{USER}"' in html and f'data-email="{ADMIN}"' not in html


def test_audit_log_filters_by_actor_and_date(app: Flask, admin: FlaskClient) -> None:
    add_rule(admin, subject="user", path="/audited", methods="GET")
    mine = admin.get(f"/admin/audit?actor={ADMIN}").get_data(as_text=True)
    assert "+ p, user, /audited, GET, allow" in mine and "rule.add" in mine
    assert "user.create" not in mine
    old = admin.get("/admin/audit?until=2000-01-01").get_data(as_text=True)
    assert "No entry." in old


@pytest.mark.parametrize(
    ("query", "verdict", "rule"),
    [
        ("subject=user@example.com&path=/&method=GET", "allow", "p, user, /, GET, allow"),
        ("subject=user@example.com&path=/admin/&method=GET", "deny", "no rule matched"),
        (
            "subject=anonymous&path=/static/x.css&method=HEAD",
            "allow",
            "p, anonymous, /static/*, GET, allow",
        ),
    ],
)
def test_try_a_request_names_the_deciding_rule(
    admin: FlaskClient, query: str, verdict: str, rule: str
) -> None:
    html = admin.get(f"/admin/try?{query}").get_data(as_text=True)
    assert re.search(rf'id="verdict"[^>]*>{verdict}<', html)
    assert f'id="rule">{rule}<' in html


def test_who_can_reach_lists_roles_routes_and_unmatched_rules(admin: FlaskClient) -> None:
    html = admin.get("/admin/reach?path=/admin/&method=GET").get_data(as_text=True)
    roles = re.search(r'id="reach-roles">(.*?)</span>\s*</p>', html, re.S).group(1)
    assert "admin" in roles and ">user<" not in roles
    assert ADMIN in html
    assert "<code>/admin/rules</code>" in html
    unmatched = re.search(r'id="unmatched">(.*?)</ul>', html, re.S).group(1)
    assert "/favicon.ico" in unmatched  # no route serves it


@pytest.mark.parametrize("revision", ["", "not-a-number"])
def test_a_form_without_its_revision_still_adds(
    app: Flask, admin: FlaskClient, revision: str
) -> None:
    """Adding depends on no other row: the revision only helps explain a conflict."""
    token, _ = form_token(admin, "/admin/rules/new")
    response = admin.post(
        "/admin/rules/new",
        data={
            "csrf_token": token,
            "revision": revision,
            "subject": "user",
            "path": "/x",
            "methods": "GET",
            "effect": "allow",
        },
    )
    assert response.status_code == 302
    assert Rule.of("p", "user", "/x", "GET", "allow") in app.extensions["authz"].rules()


def test_audit_dates_with_a_zone_are_converted(app: Flask, admin: FlaskClient) -> None:
    import datetime as dt

    add_rule(admin, subject="user", path="/zoned", methods="GET")
    newest = app.extensions["authz"].store.audit_entries()[0].at
    plus_two = dt.timezone(dt.timedelta(hours=2))
    since = (newest - dt.timedelta(hours=1)).astimezone(plus_two).isoformat()
    html = admin.get("/admin/audit", query_string={"since": since}).get_data(as_text=True)
    assert "/zoned" in html
    later = (newest + dt.timedelta(hours=1)).astimezone(plus_two).isoformat()
    html = admin.get("/admin/audit", query_string={"since": later}).get_data(as_text=True)
    assert "No entry." in html


@pytest.mark.parametrize("query", ["_", "%", "user_", "%@"])
def test_user_search_takes_wildcards_literally(admin: FlaskClient, query: str) -> None:
    html = admin.get("/admin/users", query_string={"q": query}).get_data(as_text=True)
    assert "data-email=" not in html


# -- one spelling for email subjects; risky rows accepted with a warning ------------------

NO_ACCOUNT = "no account has this email yet; the rule applies once that address registers"


@pytest.mark.parametrize("subject", ["Dave@Example.com", "DAVE@example.com"])
def test_a_rule_for_an_email_in_another_spelling_is_refused_with_the_fix(
    app: Flask, admin: FlaskClient, subject: str
) -> None:
    before = state(app)
    response = add_rule(admin, subject=subject, path="/x", methods="GET")
    assert response.status_code == 400
    assert "write it as dave@example.com" in response.get_data(as_text=True)
    assert state(app) == before


def test_form_fields_are_trimmed_but_never_folded(app: Flask, admin: FlaskClient) -> None:
    response = add_rule(admin, subject="  dave@example.com  ", path="/x", methods="GET")
    assert response.status_code == 302
    assert Rule.of("p", "dave@example.com", "/x", "GET", "allow") in app.extensions["authz"].rules()


def test_a_rule_for_an_email_with_no_account_is_saved_with_a_warning(
    app: Flask, admin: FlaskClient
) -> None:
    response = add_rule(admin, subject="dave@example.com", path="/reports", methods="GET")
    assert response.status_code == 302
    html = admin.get("/admin/rules").get_data(as_text=True)
    assert 'class="flash warning"' in html and NO_ACCOUNT in html
    rule = Rule.of("p", "dave@example.com", "/reports", "GET", "allow")
    assert rule in app.extensions["authz"].rules()
    # The form of that rule shows the warning again.
    again = admin.get(f"/admin/rules/{rule.id}/edit").get_data(as_text=True)
    assert NO_ACCOUNT in again


@pytest.mark.parametrize(
    ("fields", "warning"),
    [
        ({"subject": "anonymous", "path": "/*", "methods": ".*"}, "every request"),
        ({"subject": "user", "path": "/reports", "methods": "GET|"}, "matches every method"),
        ({"subject": "user", "path": "*", "methods": "GET"}, "matches every path"),
    ],
)
def test_a_risky_rule_is_saved_with_a_warning(
    app: Flask, admin: FlaskClient, fields: dict[str, str], warning: str
) -> None:
    assert add_rule(admin, **fields).status_code == 302
    html = admin.get("/admin/rules").get_data(as_text=True)
    assert "Added rule" in html and warning in html


def test_a_narrow_rule_gets_no_warning(app: Flask, admin: FlaskClient) -> None:
    assert add_rule(admin, subject="user", path="/reports/*", methods="GET").status_code == 302
    assert 'class="flash warning"' not in admin.get("/admin/rules").get_data(as_text=True)


def test_try_refuses_an_email_in_another_spelling(admin: FlaskClient) -> None:
    html = admin.get("/admin/try?subject=User@Example.com&path=/&method=GET").get_data(as_text=True)
    assert "write it as user@example.com" in html


def test_the_admin_page_lists_stored_rows_skipped_at_load(app: Flask, admin: FlaskClient) -> None:
    """A bad row put in the table by hand is skipped at load and named on the admin page."""
    import sqlalchemy as sa

    from service.extensions import db

    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) "
                    "VALUES ('p', 'anonymous', '/redos', '(A+)+$', 'allow')"
                )
            )
        app.extensions["authz"].load()
    page = admin.get("/admin/").get_data(as_text=True)
    assert 'id="bad-rows"' in page
    assert "/redos" in page and "nested repetition" in page
    assert 'id="decider">compiled index' in page


# -- creating roles and accounts ------------------------------------------------------------


def test_an_admin_creates_a_role_with_its_first_rule(app: Flask, admin: FlaskClient) -> None:
    token, _ = form_token(admin, "/admin/roles/new")
    data = {
        "csrf_token": token,
        "role": "auditor",
        "path": "/reports/*",
        "methods": "GET",
        "effect": "allow",
    }
    response = admin.post("/admin/roles/new", data=data)
    assert response.status_code == 302 and response.location.endswith("/admin/roles/auditor")
    first = Rule.of("p", "auditor", "/reports/*", "GET", "allow")
    assert first in app.extensions["authz"].rules()
    entry = app.extensions["authz"].store.audit_entries()[0]
    assert (entry.action, entry.actor, entry.added) == ("role.create", ADMIN, (first,))
    # The same name again is refused on its field, and nothing is written.
    before = state(app)
    again = admin.post("/admin/roles/new", data=data)
    assert again.status_code == 400 and "exists already" in again.get_data(as_text=True)
    assert state(app) == before


def test_a_role_form_shows_every_fields_error_at_once(app: Flask, admin: FlaskClient) -> None:
    token, _ = form_token(admin, "/admin/roles/new")
    before = state(app)
    response = admin.post(
        "/admin/roles/new",
        data={
            "csrf_token": token,
            "role": "Bad Role",
            "path": "no-slash",
            "methods": "GET(",
            "effect": "allow",
        },
    )
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert html.count('aria-invalid="true"') == 3, html
    assert state(app) == before


def test_an_admin_creates_an_account_with_a_password_and_roles(
    app: Flask, admin: FlaskClient
) -> None:
    token, _ = form_token(admin, "/admin/users/new")
    response = admin.post(
        "/admin/users/new",
        data={
            "csrf_token": token,
            "email": "carol@example.com",
            "password": "carol-password-1",
            "roles": ["admin"],
        },
    )
    assert response.status_code == 302
    with app.app_context():
        carol = users.get("carol@example.com")
        assert carol is not None and carol.active and carol.verified_at is not None
        assert users.authenticate("carol@example.com", "carol-password-1") is not None
    assert "admin" in app.extensions["authz"].roles_for("carol@example.com")
    entry = app.extensions["authz"].store.audit_entries()[0]
    assert (entry.action, entry.actor, entry.source) == ("user.create", ADMIN, "web")


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        (USER, "another-password-1", "already exists"),
        ("not-an-email", "another-password-1", "email"),
        ("dave@example.com", "short", "password"),
    ],
)
def test_an_account_form_refuses_bad_input_and_writes_nothing(
    app: Flask, admin: FlaskClient, email: str, password: str, message: str
) -> None:
    token, _ = form_token(admin, "/admin/users/new")
    before = state(app)
    response = admin.post(
        "/admin/users/new", data={"csrf_token": token, "email": email, "password": password}
    )
    assert response.status_code == 400
    assert message in response.get_data(as_text=True).lower()
    assert state(app) == before


def test_the_role_dropdown_never_offers_anonymous(app: Flask, admin: FlaskClient) -> None:
    html = admin.get(f"/admin/users/{USER}").get_data(as_text=True)
    assert 'value="anonymous"' not in html
    html = admin.get("/admin/users/new").get_data(as_text=True)
    assert 'value="anonymous"' not in html and 'value="admin"' in html


def test_try_decides_a_deactivated_account_as_anonymous(app: Flask, admin: FlaskClient) -> None:
    """The editor's "try" decides as the middleware would, and says so."""
    with app.app_context():
        users.set_active(USER, False, actor="test", source="cli")
    html = admin.get(f"/admin/try?subject={USER}&path=/&method=GET").get_data(as_text=True)
    assert f"{USER} is deactivated; its requests are decided as anonymous" in html
    assert 'id="verdict" class="deny"' in html


def test_the_audit_until_date_covers_that_whole_day_in_editor_and_api(
    app: Flask, admin: FlaskClient
) -> None:
    """One parser: a bare ``until`` date includes the day, on both surfaces."""
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date().isoformat()
    html = admin.get(f"/admin/audit?until={today}").get_data(as_text=True)
    assert "user.create" in html
    listing = admin.get(f"/api/v1/audit?until={today}").json
    assert "user.create" in [item["action"] for item in listing["items"]]
    for bad in ("2026-13-01", "yesterday"):
        assert admin.get(f"/admin/audit?until={bad}").status_code == 400
        assert admin.get(f"/api/v1/audit?until={bad}").status_code == 400


def test_an_admin_sets_an_accounts_password(app: Flask, admin: FlaskClient) -> None:
    path = f"/admin/users/{USER}/password"
    token, _ = form_token(admin, path)
    weak = admin.post(path, data={"csrf_token": token, "password": "short"})
    assert weak.status_code == 400
    with app.app_context():
        assert users.authenticate(USER, "short") is None
    response = admin.post(path, data={"csrf_token": token, "password": "brand-new-password-1"})
    assert response.status_code == 302
    with app.app_context():
        assert users.authenticate(USER, "brand-new-password-1") is not None
    entry = app.extensions["authz"].store.audit_entries()[0]
    assert (entry.action, entry.actor, entry.source, entry.detail) == (
        "user.password",
        ADMIN,
        "web",
        USER,
    )


def test_an_account_form_shows_the_email_and_password_errors_together(
    app: Flask, admin: FlaskClient
) -> None:
    token, _ = form_token(admin, "/admin/users/new")
    response = admin.post(
        "/admin/users/new", data={"csrf_token": token, "email": "nope", "password": "short"}
    )
    assert response.status_code == 400
    assert response.get_data(as_text=True).count('aria-invalid="true"') == 2
