"""Policy tests in the editor: the tests page, refusals by policy tests on every editor
write, the what-if preview before saving, and saving a tried request as a test."""

from __future__ import annotations

import io
import re
from html import unescape

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authz import Change
from authz import Rule
from authz.expectations import Expectation
from authz.expectations import parse as parse_tests
from authz.store import expectation_table
from service import users
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import csrf_token
from tests.conftest import store_tests as store
from tests.conftest import stored_tests as stored

ADMIN_AREA = Rule.of("p", "admin", "/admin/*", ".*", "allow")
HOME = Rule.of("p", "user", "/", "GET", "allow")
#: The promise of the issue's browser story: visitors never open the editor.
NO_VISITORS = Expectation("anonymous", "GET", "/admin/", "deny", "visitors never open the editor")


@pytest.fixture
def admin(client: FlaskClient, auth: AuthActions) -> FlaskClient:
    auth.login(ADMIN, ADMIN_PASSWORD)
    return client


def state(app: Flask) -> tuple[tuple[Rule, ...], int, int, list[Expectation]]:
    """Everything a refused write must leave alone: rows, revision, audit log, tests."""
    engine = app.extensions["authz"]
    audit = len(engine.store.audit_entries(limit=10_000))
    return engine.rules(), engine.revision, audit, stored(app)


def text(response: TestResponse) -> str:
    """The page as a reader sees it: tags dropped, entities decoded, spaces folded."""
    html = re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))
    return " ".join(unescape(html).split())


def form_post(client: FlaskClient, page: str, action: str, **fields: object) -> TestResponse:
    """Post a form of ``page`` to ``action`` with its CSRF token (and revision, if any)."""
    html = client.get(page).get_data(as_text=True)
    revision = re.search(r'name="revision"[^>]*value="(\d*)"', html)
    data: dict[str, object] = {"csrf_token": csrf_token(client, page)}
    if revision:
        data["revision"] = revision.group(1)
    data.update(fields)
    return client.post(action, data=data)


def add_rule(client: FlaskClient, **fields: str) -> TestResponse:
    values = {"effect": "allow", **fields}
    return form_post(client, "/admin/rules/new", "/admin/rules/new", **values)


# -- the tests page -----------------------------------------------------------------------


def test_the_page_lists_each_test_passing_or_failing_with_the_rule_deciding_it(
    app: Flask, admin: FlaskClient
) -> None:
    store(app, NO_VISITORS, Expectation("admin", "GET", "/admin/", "allow"))
    # A test forced past (as only the CLI can) that the policy does not keep.
    store(app, Expectation("user", "GET", "/admin/", "allow", "users see the editor"), force=True)
    response = admin.get("/admin/tests")
    assert response.status_code == 200
    page = text(response)
    assert "3 test(s) · 1 failing on the current policy" in page
    assert "pass admin may GET /admin/ allowed by p, admin, /admin/*, .*, allow" in page, page
    assert "pass anonymous may not GET /admin/ visitors never open the editor" in page
    assert "FAIL user may GET /admin/ users see the editor denied: no rule matches" in page
    failing = text(admin.get("/admin/tests?failing=1"))
    assert "FAIL user may GET /admin/" in failing and "anonymous may not" not in failing
    found = text(admin.get("/admin/tests?q=VISITORS"))
    assert "1 test(s) match the filter" in found and "admin may GET" not in found


def test_the_page_is_in_the_editor_navigation_and_pages(app: Flask, admin: FlaskClient) -> None:
    assert 'href="/admin/tests"' in admin.get("/admin/rules").get_data(as_text=True)
    store(app, *(Expectation("anonymous", "GET", f"/docs/{i}", "deny") for i in range(60)))
    first = admin.get("/admin/tests").get_data(as_text=True)
    assert first.count('class="test pass"') == 50 and "page 1 of 2" in first
    second = admin.get("/admin/tests?page=2").get_data(as_text=True)
    assert second.count('class="test pass"') == 10
    assert admin.get("/admin/tests?page=99").status_code == 200  # clamped to the last


def test_a_plain_user_may_not_open_or_write_the_tests(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.login()
    before = state(app)
    for path in ("/admin/tests", "/admin/tests/export"):
        assert client.get(path).status_code == 403
    token = csrf_token(client, "/account")
    fields = {"subject": "user", "method": "GET", "path": "/admin/", "outcome": "allow"}
    assert client.post("/admin/tests", data={"csrf_token": token, **fields}).status_code == 403
    assert client.post("/admin/try/save", data={"csrf_token": token, **fields}).status_code == 403
    assert state(app) == before


def test_adding_a_test_stores_it_audited(app: Flask, admin: FlaskClient) -> None:
    response = form_post(
        admin,
        "/admin/tests",
        "/admin/tests",
        subject="anonymous",
        method="GET",
        path="/admin/",
        outcome="deny",
        note="visitors never open the editor",
    )
    assert response.status_code == 302
    assert stored(app) == [NO_VISITORS]
    entry = app.extensions["authz"].store.audit_entries()[0]
    assert (entry.actor, entry.source, entry.action) == (ADMIN, "web", "test.add")
    assert "Stored the policy test: anonymous may not GET /admin/" in text(
        admin.get("/admin/tests")
    )


def test_a_test_the_policy_does_not_keep_is_refused_with_the_deciding_rule(
    app: Flask, admin: FlaskClient
) -> None:
    before = state(app)
    response = form_post(
        admin,
        "/admin/tests",
        "/admin/tests",
        subject="admin",
        method="GET",
        path="/admin/rules",
        outcome="deny",
        note="",
    )
    assert response.status_code == 409
    page = text(response)
    assert "Refused by policy tests" in page
    assert f"admin may not GET /admin/rules : allowed by rule {ADMIN_AREA}" in page
    assert 'value="/admin/rules"' in response.get_data(as_text=True)  # the form keeps it
    assert state(app) == before


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"subject": "User"}, "subject", "write it as user"),
        ({"subject": "a b"}, "subject", "must be an email, a role"),
        ({"method": "get"}, "method", "upper case"),
        ({"method": "HEAD"}, "method", "HEAD is decided as GET"),
        ({"path": "/a/../admin/"}, "path", ""),
        ({"path": "admin"}, "path", ""),
        ({"outcome": "maybe"}, "outcome", "Not a valid choice"),
        ({"note": "line\x01break"}, "note", "must not contain control"),
        ({"note": "x" * 501}, "note", "500"),
    ],
)
def test_a_bad_test_is_refused_next_to_its_field_and_stores_nothing(
    app: Flask, admin: FlaskClient, fields: dict[str, str], field: str, message: str
) -> None:
    before = state(app)
    values = {"subject": "user", "method": "GET", "path": "/x", "outcome": "deny", "note": ""}
    response = form_post(admin, "/admin/tests", "/admin/tests", **{**values, **fields})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert re.search(rf'id="{field}-error-1" class="error">[^<]*{re.escape(message)}', html), html
    assert state(app) == before


def test_a_test_without_csrf_is_refused(app: Flask, admin: FlaskClient) -> None:
    before = state(app)
    fields = {"subject": "user", "method": "GET", "path": "/x", "outcome": "deny"}
    assert admin.post("/admin/tests", data=fields).status_code == 400
    assert admin.post("/admin/try/save", data=fields).status_code == 400
    assert state(app) == before


def test_removing_a_test_asks_for_confirmation_then_removes(app: Flask, admin: FlaskClient) -> None:
    store(app, NO_VISITORS)
    path = f"/admin/tests/remove?id={NO_VISITORS.id}"
    page = text(admin.get(path))
    assert "Remove the policy test “anonymous may not GET /admin/”?" in page
    assert stored(app) == [NO_VISITORS]
    assert form_post(admin, path, path).status_code == 302
    assert stored(app) == []
    assert app.extensions["authz"].store.audit_entries()[0].action == "test.remove"
    assert admin.get(path).status_code == 404
    for other in ("not-an-id", NO_VISITORS.id.upper(), f"{NO_VISITORS.id}%00", ""):
        assert admin.get(f"/admin/tests/remove?id={other}").status_code == 404


def test_the_export_downloads_csv_that_loads_back(app: Flask, admin: FlaskClient) -> None:
    tricky = Expectation("user", "GET", "/", "allow", 'says "hi", then, =cmd')
    store(app, NO_VISITORS, tricky)
    response = admin.get("/admin/tests/export")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert 'attachment; filename="policy-tests.csv"' in response.headers["Content-Disposition"]
    assert list(parse_tests(response.get_data(as_text=True)).expectations) == [NO_VISITORS, tricky]


def upload(client: FlaskClient, content: bytes, *, replace: bool = False) -> TestResponse:
    data: dict[str, object] = {
        "csrf_token": csrf_token(client, "/admin/tests"),
        "file": (io.BytesIO(content), "tests.csv"),
    }
    if replace:
        data["replace"] = "y"
    return client.post("/admin/tests/load", data=data, content_type="multipart/form-data")


def test_loading_a_file_stores_its_tests_and_replace_removes_the_others(
    app: Flask, admin: FlaskClient
) -> None:
    store(app, Expectation("user", "GET", "/", "allow"))
    content = b"# a comment\nanonymous, GET, /admin/, deny, visitors never open the editor\n"
    response = upload(admin, content)
    assert response.status_code == 302
    assert len(stored(app)) == 2
    assert "Loaded 1 policy test(s): 1 stored, 0 removed" in text(admin.get("/admin/tests"))
    assert upload(admin, content, replace=True).status_code == 302
    assert stored(app) == [NO_VISITORS]
    assert app.extensions["authz"].store.audit_entries()[0].action == "tests.load"


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        (b"anonymous, GET, /admin/\nuser, get, /, allow\n", ["line 1:", "line 2: method:"]),
        (b"\xff\xfe not text", ["not UTF-8 text"]),
        (b"user, GET, /, allow\nuser, GET, /, deny\n", ["line 2: the request user GET /"]),
    ],
)
def test_a_bad_file_is_refused_line_by_line_and_stores_nothing(
    app: Flask, admin: FlaskClient, content: bytes, shown: list[str]
) -> None:
    before = state(app)
    response = upload(admin, content, replace=True)
    assert response.status_code == 400
    page = text(response)
    for part in shown:
        assert part in page, page
    assert state(app) == before


def test_a_file_the_policy_does_not_keep_is_refused_whole(app: Flask, admin: FlaskClient) -> None:
    before = state(app)
    response = upload(admin, b"user, GET, /, allow\nuser, GET, /admin/rules, allow\n")
    assert response.status_code == 409
    page = text(response)
    assert "Refused by policy tests" in page
    assert "user may GET /admin/rules : denied: no rule matches" in page
    assert state(app) == before


def test_a_file_without_a_file_or_too_large_is_refused(app: Flask, admin: FlaskClient) -> None:
    before = state(app)
    token = csrf_token(admin, "/admin/tests")
    assert admin.post("/admin/tests/load", data={"csrf_token": token}).status_code == 400
    # A body over the service's cap is refused before it is read (built by hand: the
    # test client would spool a large upload to a temporary file of its own).
    boundary = "cap"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}'
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="t.csv"\r\n\r\n'
        ).encode()
        + b"user, GET, /, allow, "
        + b"x" * (2 * 1024 * 1024)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = admin.post(
        "/admin/tests/load", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert response.status_code == 413
    assert state(app) == before


def test_stored_tests_that_do_not_read_are_shown_as_an_error(
    app: Flask, admin: FlaskClient
) -> None:
    engine = app.extensions["authz"]
    with engine.store.transaction() as session:
        row = {"subject": "Not A Subject", "method": "GET", "path": "/", "outcome": "allow"}
        session.execute(sa.insert(expectation_table).values(**row, note=""))
    response = admin.get("/admin/tests")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert re.search(r'id="bad-tests"[^>]*role="alert"', html)
    assert "does not read: subject:" in text(response)
    # Each is named by its id and removed through the usual confirmation.
    bad = Expectation("Not A Subject", "GET", "/", "allow")
    remove = f"/admin/tests/remove?id={bad.id}"
    assert f'href="{remove}"' in html
    assert form_post(admin, remove, remove).status_code == 302
    assert 'id="bad-tests"' not in admin.get("/admin/tests").get_data(as_text=True)


def test_values_are_escaped_on_the_page(app: Flask, admin: FlaskClient) -> None:
    store(app, Expectation("user", "GET", "/", "allow", "<script>alert(1)</script>"))
    html = admin.get("/admin/tests").get_data(as_text=True)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


# -- refusals of editor writes ------------------------------------------------------------


def assert_refused(response: TestResponse, test: str, rule: str) -> None:
    assert response.status_code == 409, response.status_code
    html = response.get_data(as_text=True)
    assert re.search(r'id="refused"[^>]*role="alert"', html)
    page = text(response)
    assert "Refused by policy tests" in page
    assert test in page, page
    assert rule in page, page


def test_a_rule_that_breaks_a_test_is_refused_and_writes_nothing(
    app: Flask, admin: FlaskClient
) -> None:
    store(app, NO_VISITORS)
    before = state(app)
    response = add_rule(admin, subject="anonymous", path="/admin/*", methods="GET")
    assert_refused(
        response,
        "anonymous may not GET /admin/ (visitors never open the editor)",
        "allowed by rule p, anonymous, /admin/*, GET, allow",
    )
    assert 'value="/admin/*"' in response.get_data(as_text=True)  # what the admin typed
    assert state(app) == before  # no row, no revision, no audit entry


def test_an_edit_that_breaks_a_test_is_refused(app: Flask, admin: FlaskClient) -> None:
    store(app, Expectation("user", "GET", "/", "allow"))
    before = state(app)
    path = f"/admin/rules/{HOME.id}/edit"
    response = form_post(
        admin, path, path, subject="user", path="/home", methods="GET", effect="allow"
    )
    assert_refused(response, "user may GET /", "denied: no rule matches")
    assert 'value="/home"' in response.get_data(as_text=True)
    assert state(app) == before


def test_a_removal_that_breaks_a_test_is_refused_on_the_confirmation_page(
    app: Flask, admin: FlaskClient
) -> None:
    store(app, Expectation("user", "GET", "/", "allow"))
    before = state(app)
    path = f"/admin/rules/{HOME.id}/delete"
    response = form_post(admin, path, path)
    assert_refused(response, "user may GET /", "denied: no rule matches")
    assert 'id="confirm"' in response.get_data(as_text=True)
    assert state(app) == before


def test_role_assignment_and_removal_that_break_a_test_are_refused(
    app: Flask, admin: FlaskClient
) -> None:
    store(app, Expectation(USER, "GET", "/admin/", "deny"), Expectation(USER, "GET", "/", "allow"))
    before = state(app)
    page = f"/admin/users/{USER}"
    response = form_post(admin, page, f"{page}/roles", role="admin")
    assert_refused(response, f"{USER} may not GET /admin/", f"allowed by rule {ADMIN_AREA}")
    assert state(app) == before
    remove = f"{page}/roles/user/remove"
    response = form_post(admin, remove, remove)
    assert_refused(response, f"{USER} may GET /", "denied: no rule matches")
    assert state(app) == before


def test_a_role_whose_first_rule_breaks_a_test_is_not_created(
    app: Flask, admin: FlaskClient
) -> None:
    store(app, Expectation("auditor", "GET", "/admin/audit", "deny"))
    before = state(app)
    fields = {"role": "auditor", "path": "/admin/audit", "methods": "GET", "effect": "allow"}
    response = form_post(admin, "/admin/roles/new", "/admin/roles/new", **fields)
    assert_refused(
        response,
        "auditor may not GET /admin/audit",
        "allowed by rule p, auditor, /admin/audit, GET, allow",
    )
    assert 'value="auditor"' in response.get_data(as_text=True)
    assert state(app) == before


def test_a_token_or_account_whose_roles_break_a_test_is_not_created(
    app: Flask, admin: FlaskClient
) -> None:
    store(
        app,
        Expectation("token:deploy", "GET", "/admin/", "deny"),
        Expectation("new@example.com", "GET", "/admin/", "deny"),
    )
    before = state(app)
    response = form_post(admin, "/admin/tokens", "/admin/tokens", name="deploy", roles="admin")
    assert_refused(response, "token:deploy may not GET /admin/", f"allowed by rule {ADMIN_AREA}")
    assert "secret" not in text(response).lower().split("service tokens")[0]
    assert 'value="deploy"' in response.get_data(as_text=True)
    fields = {"email": "new@example.com", "password": "new-password-1", "roles": "admin"}
    response = form_post(admin, "/admin/users/new", "/admin/users/new", **fields)
    assert_refused(response, "new@example.com may not GET /admin/", str(ADMIN_AREA))
    assert 'value="new@example.com"' in response.get_data(as_text=True)
    assert state(app) == before
    with app.app_context():
        assert users.get("new@example.com") is None


# -- what-if before saving ----------------------------------------------------------------


def test_a_preview_shows_who_gains_and_writes_nothing(app: Flask, admin: FlaskClient) -> None:
    store(app, NO_VISITORS)
    before = state(app)
    response = add_rule(
        admin, subject="user", path="/reports/:id", methods="POST", effect="allow", preview="1"
    )
    assert response.status_code == 200
    page = text(response)
    assert "What this change would do" in page
    assert "+ user may now POST /reports/:id" in page
    assert "Saving would be accepted" in page
    assert "+ p, user, /reports/:id, POST, allow" in page
    assert 'value="/reports/:id"' in response.get_data(as_text=True)  # ready to save
    assert state(app) == before
    # Saving the same form now writes it.
    saved = add_rule(admin, subject="user", path="/reports/:id", methods="POST", effect="allow")
    assert saved.status_code == 302
    assert Rule.of("p", "user", "/reports/:id", "POST", "allow") in app.extensions["authz"].rules()


def test_a_preview_of_a_change_that_breaks_a_test_says_it_would_be_refused(
    app: Flask, admin: FlaskClient
) -> None:
    store(app, NO_VISITORS)
    before = state(app)
    response = add_rule(admin, subject="anonymous", path="/admin/*", methods="GET", preview="1")
    assert response.status_code == 200
    page = text(response)
    assert "Saving would be refused" in page
    assert "breaks: anonymous may not GET /admin/: allowed by rule" in page
    assert "+ anonymous may now GET /admin/rules" in page
    assert state(app) == before


def test_a_preview_of_an_edit_shows_both_sides(app: Flask, admin: FlaskClient) -> None:
    before = state(app)
    path = f"/admin/rules/{HOME.id}/edit"
    response = form_post(
        admin, path, path, subject="user", path="/", methods="GET|POST", effect="allow", preview="1"
    )
    assert response.status_code == 200
    page = text(response)
    assert "+ p, user, /, GET|POST, allow" in page and "- p, user, /, GET, allow" in page
    assert "+ user may now POST /" in page
    assert state(app) == before


def test_a_preview_with_bad_fields_shows_the_errors_not_a_diff(
    app: Flask, admin: FlaskClient
) -> None:
    before = state(app)
    response = add_rule(admin, subject="User", path="x", methods="GET", preview="1")
    assert response.status_code == 400
    assert 'id="whatif"' not in response.get_data(as_text=True)
    assert state(app) == before


def test_a_preview_needs_the_csrf_token(app: Flask, admin: FlaskClient) -> None:
    data = {"subject": "user", "path": "/r", "methods": "GET", "effect": "allow", "preview": "1"}
    response = admin.post("/admin/rules/new", data=data)
    assert response.status_code == 400
    assert 'id="whatif"' not in response.get_data(as_text=True)


def test_the_removal_confirmations_show_the_diff_of_the_removal(
    app: Flask, admin: FlaskClient
) -> None:
    page = text(admin.get(f"/admin/rules/{HOME.id}/delete"))
    assert "- user may no longer GET /" in page
    assert "- p, user, /, GET, allow" in page
    store(app, Expectation(USER, "GET", "/", "allow"))
    page = text(admin.get(f"/admin/users/{USER}/roles/user/remove"))
    assert f"- {USER} may no longer GET /" in page
    assert f"breaks: {USER} may GET /: denied: no rule matches" in page
    assert "Saving would be refused" in page


def test_role_creation_and_assignment_previews_write_nothing(
    app: Flask, admin: FlaskClient
) -> None:
    before = state(app)
    fields = {"role": "auditor", "path": "/admin/audit", "methods": "GET", "effect": "allow"}
    response = form_post(admin, "/admin/roles/new", "/admin/roles/new", preview="1", **fields)
    assert response.status_code == 200
    assert "+ auditor may now GET /admin/audit" in text(response)
    page = f"/admin/users/{USER}"
    response = form_post(admin, page, f"{page}/roles", role="admin", preview="1")
    assert response.status_code == 200
    # A subject gaining many requests shows its first few and counts the rest.
    assert f"+ {USER} may now GET /admin/ " in text(response)
    assert f"+ {USER} may now" in text(response) and "more request(s)" in text(response)
    assert state(app) == before


# -- try a request, then keep it ----------------------------------------------------------


def test_a_tried_request_is_saved_as_a_test_in_one_click(app: Flask, admin: FlaskClient) -> None:
    tried = f"/admin/try?subject={USER}&path=/admin/&method=GET"
    page = admin.get(tried).get_data(as_text=True)
    assert 'id="save-test"' in page
    assert f'name="subject" type="hidden" value="{USER}"' in page
    response = form_post(
        admin,
        tried,
        "/admin/try/save",
        subject=USER,
        method="GET",
        path="/admin/",
        outcome="deny",
        note="users stay out",
    )
    assert response.status_code == 302
    assert stored(app) == [Expectation(USER, "GET", "/admin/", "deny", "users stay out")]
    after = admin.get(response.headers["Location"])
    assert f"Saved the policy test: {USER} may not GET /admin/" in text(after)
    assert re.search(r'id="saved"><a href="/admin/tests\?q=', after.get_data(as_text=True))


def test_a_deactivated_account_is_saved_under_its_own_name(app: Flask, admin: FlaskClient) -> None:
    """The try page decides a deactivated account as anonymous; the test names the account
    and promises what the policy decides for it."""
    with app.app_context():
        users.set_active(USER, False, actor="test", source="cli")
    tried = f"/admin/try?subject={USER}&path=/&method=GET"
    assert f"Stores the policy test {USER} may GET /" in text(admin.get(tried))
    response = form_post(
        admin, tried, "/admin/try/save", subject=USER, method="GET", path="/", outcome="allow"
    )
    assert response.status_code == 302
    assert stored(app) == [Expectation(USER, "GET", "/", "allow")]


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "User@Example.com", "method": "GET", "path": "/"},
        {"subject": "user", "method": "GET", "path": "/a/../admin/"},
        {"subject": "user", "method": "GET", "path": "/a\\b"},
        {"subject": "user", "method": "GET", "path": "/", "note": "a\x00b"},
        {"subject": "user", "method": "G(ET", "path": "/"},
        {"subject": "", "method": "GET", "path": "/"},
    ],
)
def test_a_forged_save_stores_nothing(
    app: Flask, admin: FlaskClient, fields: dict[str, str]
) -> None:
    before = state(app)
    response = form_post(admin, "/admin/try", "/admin/try/save", **fields)
    assert response.status_code == 302
    assert "Not saved" in text(admin.get(response.headers["Location"]))
    assert state(app) == before


def test_a_save_decides_again_and_stores_only_the_promise_the_page_showed(
    app: Flask, admin: FlaskClient
) -> None:
    """The decision is made again at the click: a page shown before a change stores
    neither its promise (no longer kept) nor the opposite one (never shown)."""
    tried = f"/admin/try?subject={USER}&path=/admin/&method=GET"
    page = admin.get(tried).get_data(as_text=True)
    assert 'name="outcome" type="hidden" value="deny"' in page
    token = csrf_token(admin, tried)
    grant = Change.adding(Rule.of("g", USER, "admin"))
    app.extensions["authz"].apply(grant, actor="t", source="cli")
    data = {"csrf_token": token, "subject": USER, "method": "GET", "path": "/admin/"}
    response = admin.post("/admin/try/save", data={**data, "outcome": "deny"})
    assert response.status_code == 302
    assert "the policy changed since you tried it" in text(admin.get(response.headers["Location"]))
    assert stored(app) == []
    # A forged outcome the policy does not decide stores nothing either.
    admin.post("/admin/try/save", data={**data, "outcome": "maybe"})
    assert stored(app) == []
    admin.post("/admin/try/save", data={**data, "outcome": "allow"})
    assert stored(app) == [Expectation(USER, "GET", "/admin/", "allow")]


def test_a_stored_test_that_does_not_read_refuses_rule_writes_until_removed(
    app: Flask, admin: FlaskClient
) -> None:
    engine = app.extensions["authz"]
    with engine.store.transaction() as session:
        row = {"subject": "user", "method": "get", "path": "/", "outcome": "allow", "note": ""}
        session.execute(sa.insert(expectation_table).values(**row))
    before = state(app)
    response = add_rule(admin, subject="user", path="/reports", methods="GET")
    assert response.status_code == 409
    assert "Refused by policy tests" in text(response)
    assert "does not read: method:" in text(response)
    assert state(app) == before
    bad = Expectation("user", "get", "/", "allow")
    remove = f"/admin/tests/remove?id={bad.id}"
    assert form_post(admin, remove, remove).status_code == 302
    assert add_rule(admin, subject="user", path="/reports", methods="GET").status_code == 302
