"""Review of the policy-test surfaces: dry runs and previews write nothing, no surface but
the CLI forces past a test, hostile files and notes answer 4xx, and what the editor shows
is what it stores."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner

from authz import Change
from authz import Rule
from authz.expectations import Expectation
from authz.store import expectation_table
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import bearer
from tests.conftest import csrf_token
from tests.conftest import make_token
from tests.conftest import store_tests as store
from tests.conftest import stored_tests as stored
from tests.integration.test_api import API
from tests.integration.test_api import Api
from tests.integration.test_api import audit_log
from tests.integration.test_api import engine_of
from tests.integration.test_cli import assert_clean
from tests.integration.test_cli import assert_ok
from tests.integration.test_cli import invoke

NO_VISITORS = Expectation("anonymous", "GET", "/admin/", "deny", "visitors never open the editor")
#: A promise the default policy does not keep.
NOT_KEPT = Expectation("anonymous", "GET", "/admin/", "allow")
CSV = "text/csv"


@pytest.fixture
def api(client: FlaskClient, auth: AuthActions) -> Api:
    auth.login(ADMIN, ADMIN_PASSWORD)
    return Api(client)


def fields(item: Expectation) -> dict[str, str]:
    """The body of a new test."""
    return {k: v for k, v in item.as_dict().items() if k != "id"}


def everything(app: Flask) -> tuple[object, ...]:
    """Rows, revision, audit log length and stored tests."""
    engine = engine_of(app)
    return engine.rules(), engine.revision, len(audit_log(app)), stored(app)


# -- Q2: no surface but the CLI forces past a test -----------------------------------------


@pytest.mark.parametrize("query", ["force=1", "FORCE=1", "Force=true", "force=1&force=1"])
def test_no_query_parameter_forces_a_test_past_the_api(app: Flask, api: Api, query: str) -> None:
    before = everything(app)
    response = api.post(f"/policy/tests?{query}", fields(NOT_KEPT))
    assert response.status_code == 409, response.get_data(as_text=True)
    rule = {"subject": "anonymous", "path": "/admin/*", "methods": "GET"}
    store(app, NO_VISITORS)
    before = everything(app)
    assert api.post(f"/policy/rules?{query}", rule).status_code == 409
    assert everything(app) == before


def test_a_force_field_in_the_json_body_is_refused_not_obeyed(app: Flask, api: Api) -> None:
    before = everything(app)
    response = api.post("/policy/tests", {**fields(NOT_KEPT), "force": True})
    assert 400 <= response.status_code < 500 and response.status_code != 201
    assert everything(app) == before


def test_a_hidden_force_field_in_the_editor_forces_nothing(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.login(ADMIN, ADMIN_PASSWORD)
    before = everything(app)
    data = {
        "csrf_token": csrf_token(client, "/admin/tests"),
        **fields(NOT_KEPT),
        "force": "1",
        "confirm_self": "y",
    }
    response = client.post("/admin/tests?force=1", data=data)
    assert response.status_code == 409
    assert everything(app) == before


# -- Q1: dry runs write nothing --------------------------------------------------------------


def test_api_dry_runs_of_test_writes_store_nothing(app: Flask, api: Api) -> None:
    store(app, NO_VISITORS)
    before = everything(app)
    new = Expectation("user", "GET", "/", "allow")
    assert api.post("/policy/tests?dry_run=1", fields(new)).json["accepted"] is True
    assert api.delete(f"/policy/tests/{NO_VISITORS.id}?dry_run=1").status_code == 200
    body = "anonymous, GET, /login, allow\n"
    response = api.post("/policy/tests/load?dry_run=1&replace=1", data=body, content_type=CSV)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert everything(app) == before


def test_token_dry_runs_create_no_token_and_revoke_none(app: Flask, api: Api) -> None:
    make_token(app, "ci", roles=("user",))
    before = everything(app)
    tokens_before = api.get("/tokens").get_data(as_text=True)
    response = api.post("/tokens?dry_run=1", {"name": "dry", "roles": ["admin"]})
    assert response.status_code == 200 and "secret" not in response.json
    assert api.delete("/tokens/ci?dry_run=1").status_code == 200
    assert api.get("/tokens").get_data(as_text=True) == tokens_before
    assert everything(app) == before


@pytest.mark.parametrize("query", ["dry_run=1", "DRY_RUN=1", "dry-run=1"])
def test_a_dry_run_asked_of_a_write_without_one_is_refused_not_made(
    app: Flask, api: Api, query: str
) -> None:
    """A client asking for a dry run of an account write must not get the write made
    (README: a misspelt dry_run is "a 400, never a write"); today it deactivates."""
    response = api.post(f"/users/{USER}/deactivate?{query}")
    assert api.get(f"/users/{USER}").json["user"]["active"] is True
    assert response.status_code == 400, response.get_data(as_text=True)


def test_a_plain_user_and_a_narrow_token_reach_no_dry_run_or_tests(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    store(app, NO_VISITORS)
    secret = make_token(app, "narrow", roles=("user",))
    before = everything(app)
    for method, path in (
        ("GET", "/policy/tests"),
        ("GET", "/policy/tests/export"),
        ("POST", "/policy/tests?dry_run=1"),
        ("POST", "/policy/tests/load?dry_run=1"),
        ("POST", "/policy/rules?dry_run=1"),
        ("POST", "/tokens?dry_run=1"),
    ):
        response = client.open(f"{API}{path}", method=method, headers=bearer(secret), json={})
        assert response.status_code in (401, 403), (path, response.status_code)
        assert "visitors never" not in response.get_data(as_text=True)
    assert everything(app) == before


# -- Q3: hostile input answers 4xx ---------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbfanonymous, GET, /login, allow\n",
        b"anonymous, GET, /lo\x00gin, allow\n",
        b"anonymous, GET, /login, allow, \xff\xfe\n",
        b"anonymous, GET, /" + b"a" * 200_000 + b", allow\n",
        b'anonymous, GET, /login, allow, "unterminated\n',
        b"\x00" * 1000,
    ],
)
def test_hostile_csv_loads_answer_4xx_or_store(app: Flask, api: Api, raw: bytes) -> None:
    response = api.post("/policy/tests/load", data=raw, content_type=CSV)
    assert response.status_code in (200, 400, 413, 415), response.get_data(as_text=True)
    if response.status_code == 200:  # only the BOM line may store, without its BOM
        assert stored(app) == [Expectation("anonymous", "GET", "/login", "allow")]


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbfanonymous, GET, /login, allow\n",
        b"anonymous, GET, /lo\x00gin, allow\n",
        b"\xff\xfe\x00",
        b"anonymous, GET, /" + b"a" * 200_000 + b", allow\n",
    ],
)
def test_hostile_csv_uploads_in_the_editor_answer_4xx_or_store(
    app: Flask, client: FlaskClient, auth: AuthActions, raw: bytes
) -> None:
    auth.login(ADMIN, ADMIN_PASSWORD)
    data = {"csrf_token": csrf_token(client, "/admin/tests"), "file": (io.BytesIO(raw), "t.csv")}
    response = client.post("/admin/tests/load", data=data, content_type="multipart/form-data")
    assert response.status_code in (302, 400, 413), response.status_code
    if response.status_code == 302:
        assert stored(app) == [Expectation("anonymous", "GET", "/login", "allow")]


def test_ten_thousand_and_one_tests_are_refused_as_a_400(app: Flask, api: Api) -> None:
    body = "".join(f"anonymous, GET, /nope/{i}, deny\n" for i in range(10_001))
    before = everything(app)
    response = api.post("/policy/tests/load", data=body, content_type=CSV)
    assert response.status_code == 400, response.status_code
    assert everything(app) == before


def test_html_in_a_note_and_a_path_is_escaped_on_the_tests_page(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    evil = Expectation("anonymous", "GET", "/<script>x</script>", "deny", "<img src=x onerror=1>")
    store(app, evil)
    auth.login(ADMIN, ADMIN_PASSWORD)
    page = client.get("/admin/tests").get_data(as_text=True)
    assert "<script>x</script>" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=1&gt;" in page


def test_the_export_does_not_hand_a_spreadsheet_a_formula(app: Flask, api: Api) -> None:
    """A note is free text written by anyone who may add a test; opened in a spreadsheet,
    a cell starting with = + - @ runs as a formula. Such a note is refused where it is
    written (subjects, methods, paths and outcomes cannot hold a formula's parentheses)."""
    for note in ('=HYPERLINK("http://x.test")', "+1", " -2", "@SUM(1)"):
        body = {"subject": "anonymous", "method": "GET", "path": "/login", "outcome": "allow"}
        response = api.post("/policy/tests", {**body, "note": note})
        assert response.status_code == 400, note
        assert response.json["errors"][0]["field"] == "note"
    assert stored(app) == []


# -- Q4: what the editor shows is what it stores -------------------------------------------


def test_save_as_test_stores_the_outcome_the_page_showed(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    """The try page shows "Stores the policy test anonymous may not GET /reports"; a
    change lands before the click; the click must not store the opposite promise."""
    auth.login(ADMIN, ADMIN_PASSWORD)
    page = client.get("/admin/try?subject=anonymous&path=/reports&method=GET")
    html = page.get_data(as_text=True)
    shown = re.search(r'id="promise">([^<]*)<', html)
    assert shown is not None and shown.group(1) == "anonymous may not GET /reports"
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert token is not None
    with app.app_context():
        engine_of(app).apply(
            Change.adding(Rule.of("p", "anonymous", "/reports", "GET", "allow")),
            actor="other-admin",
            source="cli",
        )
    client.post(
        "/admin/try/save",
        data={
            "csrf_token": token.group(1),
            "subject": "anonymous",
            "method": "GET",
            "path": "/reports",
            "note": "",
        },
    )
    assert [str(e) for e in stored(app)] in ([], ["anonymous may not GET /reports"])


# -- Q5: CSRF on every new POST of the editor ------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/admin/tests", "/admin/tests/load", "/admin/try/save", "/admin/tests/remove?id={id}"],
)
def test_every_new_editor_post_needs_its_csrf_token(
    app: Flask, client: FlaskClient, auth: AuthActions, path: str
) -> None:
    store(app, NO_VISITORS)
    auth.login(ADMIN, ADMIN_PASSWORD)
    before = everything(app)
    data = {
        "subject": "user",
        "method": "GET",
        "path": "/",
        "outcome": "allow",
        "confirm": "y",
    }
    response = client.post(path.format(id=NO_VISITORS.id), data=data)
    assert response.status_code in (302, 400), response.status_code
    assert everything(app) == before


# -- Q1/Q4: an empty file does not quietly remove every promise ------------------------------


@pytest.mark.parametrize("content", [b"", b"# subject, method, path, outcome, note\n"])
def test_the_editor_does_not_replace_every_test_with_an_empty_file(
    app: Flask, client: FlaskClient, auth: AuthActions, content: bytes
) -> None:
    """The API refuses ``replace=1`` with a file holding no test (``allow_empty=1`` needed:
    "a truncated upload must not quietly do it"); the editor's Replace does it."""
    store(app, NO_VISITORS)
    auth.login(ADMIN, ADMIN_PASSWORD)
    data = {
        "csrf_token": csrf_token(client, "/admin/tests"),
        "file": (io.BytesIO(content), "tests.csv"),
        "replace": "y",
    }
    response = client.post("/admin/tests/load", data=data, content_type="multipart/form-data")
    assert stored(app) == [NO_VISITORS]
    assert response.status_code == 400


def test_the_cli_does_not_replace_every_test_with_an_empty_file(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    """``policy load --replace`` needs ``--allow-empty`` for an empty file; ``tests load
    --replace`` removes every promise with one."""
    store(app, NO_VISITORS)
    empty = tmp_path / "tests.csv"
    empty.write_text("")
    result = invoke(runner, "tests", "load", str(empty), "--replace")
    assert_clean(result)
    assert stored(app) == [NO_VISITORS]
    assert result.exit_code == 1, result.output


def test_the_cli_dry_run_of_a_replace_names_what_the_load_removes(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    """With a stored test that does not read, ``tests load --replace --dry-run`` says it
    would remove 1 test; the load then removes 2 (its own planner, not the engine's)."""
    store(app, Expectation("anonymous", "GET", "/login", "allow"))
    engine = engine_of(app)
    with engine.store.transaction() as session:
        row = {"subject": "Not A Subject", "method": "GET", "path": "/", "outcome": "allow"}
        session.execute(sa.insert(expectation_table).values(**row, note=""))
    file = tmp_path / "tests.csv"
    file.write_text("anonymous, GET, /admin/, deny\n")
    dry = assert_ok(invoke(runner, "tests", "load", str(file), "--replace", "--dry-run"))
    real = assert_ok(invoke(runner, "tests", "load", str(file), "--replace"))
    assert "2 removed" in real
    assert "remove 2 policy test(s)" in dry, dry


# -- Q1/Q3: previews write nothing and escape what they show ---------------------------------


def test_editor_previews_write_nothing_and_escape_notes_and_paths(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    store(app, Expectation("anonymous", "GET", "/r/<b>x", "deny", "<img src=x onerror=1>"))
    auth.login(ADMIN, ADMIN_PASSWORD)
    before = everything(app)
    previews = [
        (
            "/admin/rules/new",
            {"subject": "anonymous", "path": "/r/<b>x", "methods": "GET", "effect": "allow"},
        ),
        (
            "/admin/roles/new",
            {"role": "auditor", "path": "/r/<b>x", "methods": "GET", "effect": "allow"},
        ),
        (f"/admin/users/{USER}/roles", {"role": "admin"}),
    ]
    for page, fields in previews:
        token = csrf_token(client, page if "roles/new" in page or "rules" in page else "/admin/")
        response = client.post(page, data={"csrf_token": token, "preview": "1", **fields})
        html = response.get_data(as_text=True)
        assert response.status_code == 200, (page, response.status_code)
        assert "<img src=x" not in html and "/r/<b>x" not in html, page
    assert everything(app) == before


# -- Q3: the what-if's limits speak of active users ------------------------------------------


def test_the_what_if_does_not_claim_500_active_users_for_grants_ahead_of_accounts(
    app: Flask, api: Api
) -> None:
    """1,001 emails granted a role ahead of registration (no account) and two active users:
    the what-if says "more than 500 active users hold the roles the change touches"."""
    grants = (Rule.of("g", f"later{i}@example.com", "user") for i in range(1_001))
    engine_of(app).apply(Change.adding(*grants), actor="test", source="cli")
    body = {"subject": "user", "path": "/reports/*", "methods": "POST"}
    response = api.post("/policy/rules?dry_run=1", body)
    assert response.status_code == 200
    limits = response.json["what_if"]["limits"]
    assert not any("active users" in line for line in limits), limits


@pytest.mark.parametrize("query", ["dry_run", "dry_run="])
def test_a_bare_dry_run_flag_is_not_read_as_a_write(app: Flask, api: Api, query: str) -> None:
    """``?dry_run`` with no value (as many clients write a flag) is read as "0": the rule
    is added. The OpenAPI document lists 1, 0, true, false only; a bare flag should be a
    400 (or a dry run), never the write."""
    before = everything(app)
    body = {"subject": "user", "path": "/reports/*", "methods": "POST"}
    response = api.post(f"/policy/rules?{query}", body)
    assert everything(app) == before, response.status_code
    assert response.status_code == 400


def test_a_403_is_no_oracle_for_which_tests_exist(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    """A plain user gets the same 403 for a stored test's id and for an unknown one, in
    the editor and the API: the middleware decides before the view looks anything up."""
    store(app, NO_VISITORS)
    auth.login()
    unknown = "0123456789abcdef"
    pages = [
        (f"/admin/tests/remove?id={NO_VISITORS.id}", "/admin/tests/remove?id=" + unknown),
        (f"{API}/policy/tests/{NO_VISITORS.id}", f"{API}/policy/tests/{unknown}"),
    ]
    for real, fake in pages:
        first, second = client.get(real), client.get(fake)
        assert first.status_code == second.status_code == 403
        assert first.get_data(as_text=True).replace(NO_VISITORS.id, unknown) == second.get_data(
            as_text=True
        ).replace(NO_VISITORS.id, unknown)


def test_a_registration_refused_by_a_test_names_no_test_and_writes_nothing(
    app: Flask, client: FlaskClient
) -> None:
    watched = "watched@example.com"
    store(app, Expectation(watched, "GET", "/", "deny", "secret reason"))
    before = everything(app)
    token = csrf_token(client, "/register")
    response = client.post(
        "/register",
        data={
            "csrf_token": token,
            "email": watched,
            "password": "a long enough password 1",
            "confirm": "a long enough password 1",
        },
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "cannot be created here" in page
    assert "secret reason" not in page and "may not GET" not in page and "p, user" not in page
    assert everything(app) == before
