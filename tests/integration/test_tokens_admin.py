"""Service tokens for admins: the ``tokens`` commands, the /api/v1/tokens resource and the
/admin/tokens page, each thin over service.tokens; secrets shown once and never read back.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner
from werkzeug.test import TestResponse

from authz import Change
from authz import Rule
from service import tokens
from service.cli import actor as cli_actor
from service.extensions import db
from service.models import ServiceToken
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import bearer
from tests.conftest import csrf_token
from tests.conftest import make_token

API = "/api/v1"
SECRET = re.compile(r"authz_[A-Za-z0-9_-]{43}")
#: A role that may read the tokens through the API and nothing else.
KEEPER = (
    Rule.of("p", "keeper", "/api/v1/tokens", "GET", "allow"),
    Rule.of("p", "keeper", "/api/v1/tokens/*", "GET", "allow"),
)


# -- helpers ----------------------------------------------------------------------------


def row(app: Flask, name: str) -> ServiceToken | None:
    with app.app_context():
        db.session.expire_all()
        return tokens.get(name)


def last_audit(app: Flask):  # type: ignore[no-untyped-def]
    with app.app_context():
        return app.extensions["authz"].store.audit_entries(limit=1)[0]


def secrets_in_db(app: Flask) -> set[str]:
    """The hash column: a secret or a hash must never appear in any read."""
    with app.app_context():
        return set(db.session.scalars(sa.select(ServiceToken.token_hash)))


def never_leaks(text: str, app: Flask, *secrets: str) -> None:
    """No secret, and no stored hash, in ``text``."""
    for secret in secrets:
        assert secret not in text
    for digest in secrets_in_db(app):
        assert digest not in text
    assert not SECRET.search(text)


def invoke(runner: FlaskCliRunner, *args: str) -> Result:
    return runner.invoke(args=list(args))


def failed(result: Result) -> str:
    """The command failed with exit status 1 and one ``Error:`` line, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def is_problem(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return response.get_json()  # type: ignore[no-any-return]


def fields(response: TestResponse) -> list[str | None]:
    return [e["field"] for e in response.get_json()["errors"]]


class Session:
    """The API as a logged-in account (cookie session): writes carry the CSRF token."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.token = client.get(f"{API}/csrf").get_json()["csrf_token"]

    def open(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        headers = {"X-CSRFToken": self.token}
        return self.client.open(f"{API}{path}", method=method, headers=headers, **kwargs)


@pytest.fixture
def admin(client: FlaskClient, auth: AuthActions) -> FlaskClient:
    auth.login(ADMIN, ADMIN_PASSWORD)
    return client


@pytest.fixture
def session(admin: FlaskClient) -> Session:
    return Session(admin)


# -- CLI --------------------------------------------------------------------------------


def test_cli_create_prints_the_secret_once_on_the_last_line(
    app: Flask, runner: FlaskCliRunner, client: FlaskClient
) -> None:
    result = invoke(runner, "tokens", "create", "deploy", "--role", "admin", "--expires", "30")
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[-1]
    assert SECRET.fullmatch(secret)
    assert secret not in result.stderr and "not shown again" in result.stderr
    assert client.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 200
    token = row(app, "deploy")
    assert token is not None and token.created_by == cli_actor()
    assert token.expires_at is not None
    entry = last_audit(app)
    assert (entry.action, entry.actor, entry.source) == ("token.create", cli_actor(), "cli")
    # Listed, but never the secret or its hash.
    listing = invoke(runner, "tokens", "list")
    assert listing.exit_code == 0, listing.output
    line = next(x for x in listing.stdout.splitlines() if x.startswith("deploy\t"))
    name, state, roles, created, expires, used, hint = line.split("\t")
    assert (state, roles) == ("active", "admin") and used != "-"  # used just above
    assert cli_actor() in created and expires != "-" and hint == f"{token.hint}..."
    never_leaks(listing.output, app, secret)
    assert listing.stdout.splitlines()[-1] == "1 token(s)."


def test_cli_revoke_ends_the_token(app: Flask, runner: FlaskCliRunner, client: FlaskClient):
    secret = make_token(app)
    result = invoke(runner, "tokens", "revoke", "ci")
    assert result.exit_code == 0 and "Revoked token:ci" in result.output
    assert client.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 401
    entry = last_audit(app)
    assert (entry.action, entry.actor) == ("token.revoke", cli_actor())
    listing = invoke(runner, "tokens", "list").stdout
    assert "ci\trevoked\t-\t" in listing
    assert "already revoked" in failed(invoke(runner, "tokens", "revoke", "ci"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "Bad Name"), "is not a token name"),
        (("create", "x" * 64), "is not a token name"),
        (("create", "ok", "--role", "no such"), "is not a role name"),
        (("create", "ok", "--role", "nosuchrole"), "no role 'nosuchrole'"),
        (("create", "ok", "--expires", "0"), "expires must be 1 to 3650 days"),
        (("create", "ok", "--expires", "3651"), "expires must be 1 to 3650 days"),
        (("create", "ci"), "a token named 'ci' exists"),
        (("revoke", "nobody"), "no token named 'nobody'"),
        (("revoke", "../ci"), "no token named"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_1(
    app: Flask, runner: FlaskCliRunner, args: tuple[str, ...], message: str
) -> None:
    make_token(app)
    with app.app_context():
        before = (app.extensions["authz"].rules(), len(tokens.list_tokens()))
    assert message in failed(invoke(runner, "tokens", *args))
    with app.app_context():
        app.extensions["authz"].refresh()
        assert (app.extensions["authz"].rules(), len(tokens.list_tokens())) == before


def test_cli_expires_must_be_a_number(runner: FlaskCliRunner) -> None:
    result = invoke(runner, "tokens", "create", "ok", "--expires", "soon")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_cli_roles_add_and_remove_work_for_tokens(
    app: Flask, runner: FlaskCliRunner, client: FlaskClient
) -> None:
    secret = make_token(app, roles=())
    assert client.get(f"{API}/users", headers=bearer(secret)).status_code == 403
    result = invoke(runner, "roles", "add", "token:ci", "admin")
    assert result.exit_code == 0, result.output
    assert client.get(f"{API}/users", headers=bearer(secret)).status_code == 200
    assert "ci\tactive\tadmin\t" in invoke(runner, "tokens", "list").stdout
    result = invoke(runner, "roles", "remove", "token:ci", "admin")
    assert result.exit_code == 0, result.output
    assert client.get(f"{API}/users", headers=bearer(secret)).status_code == 403


def test_cli_roles_add_refuses_unknown_and_revoked_tokens(
    app: Flask, runner: FlaskCliRunner
) -> None:
    # Attack: a row for a token not yet created would arm whoever later creates that name.
    assert "no token named 'token:later'" in failed(
        invoke(runner, "roles", "add", "token:later", "admin")
    )
    make_token(app, "old", roles=())
    with app.app_context():
        tokens.revoke("old", actor="t", source="t")
    assert "token 'old' is revoked" in failed(invoke(runner, "roles", "add", "token:old", "admin"))
    assert "is neither a role" in failed(invoke(runner, "roles", "add", "token:Bad", "admin"))
    with app.app_context():
        app.extensions["authz"].refresh()
        assert not [r for r in app.extensions["authz"].rules() if r.values[0].startswith("token")]


# -- JSON API ---------------------------------------------------------------------------


ITEM_KEYS = {
    "name",
    "subject",
    "roles",
    "state",
    "hint",
    "created_at",
    "created_by",
    "expires_at",
    "revoked_at",
    "last_used_at",
}


def test_api_create_get_list_revoke_as_a_session(app: Flask, session: Session) -> None:
    created = session.open(
        "POST", "/tokens", json={"name": "deploy", "roles": ["admin"], "expires_days": 7}
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.headers["Cache-Control"] == "no-store"
    data = created.get_json()
    assert set(data) == {"revision", "token", "secret"}
    secret = data["secret"]
    assert SECRET.fullmatch(secret)
    item = data["token"]
    assert set(item) == ITEM_KEYS
    assert item["name"] == "deploy" and item["subject"] == "token:deploy"
    assert item["roles"] == ["admin"] and item["state"] == "active"
    assert item["created_by"] == ADMIN and item["expires_at"] and item["revoked_at"] is None
    assert item["hint"] == secret[: tokens.HINT_LENGTH] and item["last_used_at"] is None
    entry = last_audit(app)
    assert (entry.action, entry.actor, entry.source) == ("token.create", ADMIN, "api")

    one = session.open("GET", "/tokens/deploy")
    assert one.status_code == 200 and one.get_json()["token"]["name"] == "deploy"
    listing = session.open("GET", "/tokens")
    assert listing.status_code == 200
    body = listing.get_json()
    assert {k: body[k] for k in ("total", "page", "per_page")} == {
        "total": 1,
        "page": 1,
        "per_page": 50,
    }
    assert isinstance(body["revision"], int) and set(body["items"][0]) == ITEM_KEYS
    for read in (one, listing):
        never_leaks(read.get_data(as_text=True), app, secret)

    revoked = session.open("DELETE", "/tokens/deploy")
    assert revoked.status_code == 200, revoked.get_data(as_text=True)
    assert revoked.get_json()["token"]["state"] == "revoked"
    assert revoked.get_json()["token"]["revoked_at"] and revoked.get_json()["token"]["roles"] == []
    assert (last_audit(app).action, last_audit(app).actor) == ("token.revoke", ADMIN)
    is_problem(session.open("DELETE", "/tokens/deploy"), 409)
    assert session.client.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 401


def test_api_paging(app: Flask, session: Session) -> None:
    for name in ("a", "b", "c"):
        make_token(app, name, roles=())
    page = session.open("GET", "/tokens?page=2&per_page=2").get_json()
    assert (page["total"], page["page"], page["per_page"]) == (3, 2, 2)
    assert [t["name"] for t in page["items"]] == ["c"]
    bad = session.open("GET", "/tokens?per_page=0")
    is_problem(bad, 400)
    assert fields(bad) == ["per_page"]


def test_api_writes_as_a_bearer_token_are_audited_as_the_token(app: Flask, client: FlaskClient):
    secret = make_token(app, "robot")
    created = client.post(f"{API}/tokens", json={"name": "child"}, headers=bearer(secret))
    assert created.status_code == 201, created.get_data(as_text=True)
    assert "Set-Cookie" not in created.headers
    assert created.get_json()["token"]["created_by"] == "token:robot"
    assert created.get_json()["token"]["roles"] == []
    assert (last_audit(app).action, last_audit(app).actor) == ("token.create", "token:robot")
    revoked = client.delete(f"{API}/tokens/child", headers=bearer(secret))
    assert revoked.status_code == 200
    assert (last_audit(app).action, last_audit(app).actor) == ("token.revoke", "token:robot")
    # A token may revoke itself; it is refused from the next request on.
    assert client.delete(f"{API}/tokens/robot", headers=bearer(secret)).status_code == 200
    assert client.get(f"{API}/tokens", headers=bearer(secret)).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"name": 5}, "name"),
        ({}, "name"),
        ({"name": "ok", "roles": "admin"}, "roles"),
        ({"name": "ok", "roles": [1]}, "roles[0]"),
        ({"name": "ok", "roles": ["Admin"]}, "roles"),
        ({"name": "ok", "roles": ["nosuchrole"]}, "roles"),
        ({"name": "ok", "expires_days": 0}, "expires_days"),
        ({"name": "ok", "expires_days": 3651}, "expires_days"),
        ({"name": "ok", "expires_days": "7"}, "expires_days"),
        ({"name": "ok", "expires_days": True}, "expires_days"),
        ({"name": "ok", "expires_days": 1.5}, "expires_days"),
        ({"name": "ok", "secret": "authz_" + "a" * 43}, "secret"),
        ({"name": "ok", "hint": "x"}, "hint"),
    ],
)
def test_api_create_bad_input_is_400_naming_the_field(
    app: Flask, session: Session, body: dict[str, Any], field: str
) -> None:
    response = session.open("POST", "/tokens", json=body)
    is_problem(response, 400)
    assert field in fields(response)
    with app.app_context():
        assert tokens.list_tokens() == []


def test_api_create_not_json_is_400(session: Session) -> None:
    response = session.open("POST", "/tokens", data="name=x", content_type="text/plain")
    is_problem(response, 400)


def test_api_name_exists_is_409_revoked_names_too(app: Flask, session: Session) -> None:
    make_token(app)
    is_problem(session.open("POST", "/tokens", json={"name": "ci"}), 409)
    is_problem(session.open("POST", "/tokens", json={"name": "token:ci"}), 409)
    with app.app_context():
        tokens.revoke("ci", actor="t", source="t")
    is_problem(session.open("POST", "/tokens", json={"name": "ci"}), 409)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("name", ["nobody", "Bad", "token:nobody", "x" * 300])
def test_api_unknown_token_is_404(session: Session, method: str, name: str) -> None:
    is_problem(session.open(method, f"/tokens/{name}"), 404)


@pytest.mark.parametrize("path", ["/tokens/%2e%2e", "/tokens/ci%2f..", "/tokens/..%2fci"])
def test_api_encoded_token_paths_are_refused(app: Flask, session: Session, path: str) -> None:
    make_token(app)
    assert session.open("DELETE", path).status_code == 400
    assert row(app, "ci").revoked_at is None


@pytest.mark.parametrize("spelling", ["token:ci", "CI", "ci%20", "%C4%B1ci"])
def test_api_other_spellings_of_a_name_reach_no_token(
    app: Flask, session: Session, spelling: str
) -> None:
    # Attack: a deny row on /api/v1/tokens/ci must not be passed by another spelling
    # that the lookup would fold back to "ci".
    make_token(app)
    assert session.open("DELETE", f"/tokens/{spelling}").status_code == 404
    assert session.open("GET", f"/tokens/{spelling}").status_code == 404
    assert row(app, "ci").revoked_at is None


def test_a_token_does_not_inherit_rows_written_before_it_existed(
    app: Flask, session: Session, runner: FlaskCliRunner
) -> None:
    # Attack: an assignment for token:later written now would give admin to whichever
    # token is created under that name, by whoever, with no role chosen.
    revision = session.open("GET", "/tokens").get_json()["revision"]
    armed = session.open(
        "POST",
        "/policy/roles",
        json={"member": "token:later", "role": "admin", "revision": revision},
    )
    # Every surface refuses a row for a token that does not exist (editing.member_of)...
    is_problem(armed, 400)
    assert "no token" in armed.get_json()["detail"]
    # ... and a row that got there another way (an old database, a CSV load) still
    # stops the token from being created under that name.
    app.extensions["authz"].apply(
        Change.adding(Rule.of("g", "token:later", "admin")), actor="t", source="cli"
    )
    response = session.open("POST", "/tokens", json={"name": "later"})
    is_problem(response, 400)
    assert fields(response) == ["name"]
    assert "already has rows for token:later" in response.get_json()["detail"]
    assert "already has rows" in failed(invoke(runner, "tokens", "create", "later"))
    with app.app_context():
        assert tokens.list_tokens() == []


def test_api_revoke_refuses_a_body(app: Flask, session: Session) -> None:
    make_token(app)
    response = session.open("DELETE", "/tokens/ci", json={"force": True})
    is_problem(response, 400)
    assert row(app, "ci").revoked_at is None


def test_api_session_writes_need_csrf(app: Flask, admin: FlaskClient) -> None:
    make_token(app)
    assert admin.post(f"{API}/tokens", json={"name": "x"}).status_code == 400
    assert admin.delete(f"{API}/tokens/ci").status_code == 400
    with app.app_context():
        assert [t.name for t in tokens.list_tokens()] == ["ci"]
        assert tokens.get("ci").revoked_at is None


def test_api_callers_without_rights_get_403(app: Flask, client: FlaskClient, auth) -> None:
    make_token(app)
    bare = make_token(app, "bare", roles=())
    for method, path in (("GET", "/tokens"), ("GET", "/tokens/ci"), ("DELETE", "/tokens/ci")):
        response = client.open(f"{API}{path}", method=method, headers=bearer(bare))
        is_problem(response, 403)
    is_problem(client.post(f"{API}/tokens", json={"name": "x"}, headers=bearer(bare)), 403)
    # A logged-in non-admin, and a visitor.
    auth.login(USER, USER_PASSWORD)
    assert client.get(f"{API}/tokens").status_code == 403
    auth.logout()
    assert client.get(f"{API}/tokens").status_code == 401
    assert row(app, "ci").revoked_at is None


def test_api_a_token_keeper_sees_no_secrets(app: Flask, client: FlaskClient) -> None:
    # Attack: a role that may read /api/v1/tokens should learn names, not credentials.
    with app.app_context():
        app.extensions["authz"].apply(Change.adding(*KEEPER), actor="t", source="t")
    admin_secret = make_token(app, "root")
    keeper = make_token(app, "keeper", roles=("keeper",))
    for path in ("/tokens", "/tokens/root", "/tokens/keeper"):
        response = client.get(f"{API}{path}", headers=bearer(keeper))
        assert response.status_code == 200
        never_leaks(response.get_data(as_text=True), app, admin_secret, keeper)


def test_api_last_used_is_reported(app: Flask, client: FlaskClient) -> None:
    secret = make_token(app)
    assert client.get(f"{API}/tokens/ci", headers=bearer(secret)).status_code == 200
    used = client.get(f"{API}/tokens/ci", headers=bearer(secret)).get_json()["token"]
    assert used["last_used_at"] is not None


def test_secrets_reach_no_log_line_and_no_audit_entry(
    app: Flask, session: Session, runner: FlaskCliRunner, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        api = session.open("POST", "/tokens", json={"name": "one", "roles": ["admin"]})
        page = create_on_page(session.client, name="two")
        cli = invoke(runner, "tokens", "create", "three")
        made = [
            api.get_json()["secret"],
            _SECRET_FIELD.search(page.get_data(as_text=True)).group(1),  # type: ignore[union-attr]
            cli.stdout.strip().splitlines()[-1],
        ]
        session.client.get(f"{API}/tokens", headers=bearer(made[0]))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "token.create" in logged
    with app.app_context():
        entries = app.extensions["authz"].store.audit_entries(limit=100)
    audited = "\n".join(f"{e.action} {e.actor} {e.detail}" for e in entries)
    for secret in made:
        assert SECRET.fullmatch(secret)
        assert secret not in logged and secret not in audited
        assert secret[len(tokens.PREFIX) :] not in logged


# -- web page ---------------------------------------------------------------------------

_SECRET_FIELD = re.compile(r'id="secret"[^>]*>(authz_[A-Za-z0-9_-]{43})</textarea>')


def create_on_page(client: FlaskClient, **data: Any) -> TestResponse:
    token = csrf_token(client, "/admin/tokens")
    return client.post("/admin/tokens", data={"csrf_token": token, **data})


def test_page_lists_tokens_without_secrets(app: Flask, admin: FlaskClient) -> None:
    secret = make_token(app, "deploy", expires_days=3)
    response = admin.get("/admin/tokens")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'data-name="deploy"' in html and "token:deploy" in html and "by test" in html
    assert secret[: tokens.HINT_LENGTH] in html
    never_leaks(html, app, secret)
    # Reachable from the admin navigation; roles offered as labelled checkboxes.
    assert 'href="/admin/tokens"' in admin.get("/admin/users").get_data(as_text=True)
    assert re.search(r'<label><input[^>]*type="checkbox"[^>]*value="admin"', html)
    assert '<label for="name">' in html and '<label for="expires_days">' in html


def test_page_shows_fifty_tokens_a_page(app: Flask, admin: FlaskClient) -> None:
    for i in range(51):
        make_token(app, f"t{i:02d}", roles=())
    first = admin.get("/admin/tokens").get_data(as_text=True)
    second = admin.get("/admin/tokens?page=2").get_data(as_text=True)
    assert first.count('class="token ') == 50 and 'data-name="t50"' not in first
    assert second.count('class="token ') == 1 and 'data-name="t50"' in second
    assert "page 1 of 2" in first
    assert admin.get("/admin/tokens?page=x").status_code == 400


def test_page_create_shows_the_secret_once(app: Flask, admin: FlaskClient) -> None:
    response = create_on_page(admin, name="deploy", roles=["admin", "user"], expires_days="30")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    match = _SECRET_FIELD.search(html)
    assert match and "not shown again" in html
    secret = match.group(1)
    assert admin.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 200
    with app.app_context():
        assert tokens.roles_of("deploy") == ["admin", "user"]
    token = row(app, "deploy")
    assert token.created_by == ADMIN and token.expires_at is not None
    assert (last_audit(app).action, last_audit(app).actor, last_audit(app).source) == (
        "token.create",
        ADMIN,
        "web",
    )
    # Never again: not on the list, not on a reload of the list.
    never_leaks(admin.get("/admin/tokens").get_data(as_text=True), app, secret)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "Bad Name"}, "is not a token name"),
        ({"name": ""}, "This field is required."),
        ({"name": "ok", "roles": ["nosuchrole"]}, "is not a valid choice"),
        ({"name": "ok", "expires_days": "0"}, "between 1 and 3650"),
        ({"name": "ok", "expires_days": "soon"}, "Not a valid integer value."),
        ({"name": "ci"}, "a token named &#39;ci&#39; exists"),
    ],
)
def test_page_create_bad_input_is_400_with_the_reason(
    app: Flask, admin: FlaskClient, data: dict[str, Any], message: str
) -> None:
    make_token(app)
    response = create_on_page(admin, **data)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html and 'id="secret"' not in html
    with app.app_context():
        assert [t.name for t in tokens.list_tokens()] == ["ci"]


def test_page_revoke_asks_then_revokes(app: Flask, admin: FlaskClient) -> None:
    secret = make_token(app)
    path = "/admin/tokens/ci/revoke"
    confirm = admin.get(path)
    assert confirm.status_code == 200 and "Revoke token:ci?" in confirm.get_data(as_text=True)
    assert row(app, "ci").revoked_at is None  # asking changes nothing
    response = admin.post(path, data={"csrf_token": csrf_token(admin, path)})
    assert response.status_code == 302
    assert row(app, "ci").revoked_at is not None
    assert (last_audit(app).action, last_audit(app).actor) == ("token.revoke", ADMIN)
    assert admin.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 401
    html = admin.get("/admin/tokens").get_data(as_text=True)
    assert "revoked" in html and 'href="/admin/tokens/ci/revoke"' not in html
    assert "/admin/tokens/ci/revoke" not in html
    # A second revocation is refused with a message, and changes nothing.
    again = admin.post(path, data={"csrf_token": csrf_token(admin, "/admin/tokens")})
    assert again.status_code == 302
    assert "already revoked" in admin.get("/admin/tokens").get_data(as_text=True)


def test_page_writes_need_csrf(app: Flask, admin: FlaskClient) -> None:
    make_token(app)
    assert admin.post("/admin/tokens", data={"name": "x"}).status_code == 400
    assert admin.post("/admin/tokens/ci/revoke", data={}).status_code == 400
    bad = {"csrf_token": "forged"}
    assert admin.post("/admin/tokens/ci/revoke", data=bad).status_code == 400
    with app.app_context():
        assert [t.name for t in tokens.list_tokens()] == ["ci"]
        assert tokens.get("ci").revoked_at is None


def test_page_unknown_token_is_404(admin: FlaskClient) -> None:
    assert admin.get("/admin/tokens/nobody/revoke").status_code == 404
    assert admin.get("/admin/tokens/Bad/revoke").status_code == 404


def test_page_spelling_with_prefix_is_404(app: Flask, admin: FlaskClient) -> None:
    make_token(app)
    assert admin.get("/admin/tokens/token:ci/revoke").status_code == 404


def test_page_forms_are_for_sessions_not_bearer_tokens(app: Flask, client: FlaskClient):
    # A program with the admin role may read the pages, but a form carries a CSRF token
    # bound to a session, which a bearer request has not: refused, never a 500.
    secret = make_token(app, "robot")
    assert client.get("/admin/tokens", headers=bearer(secret)).status_code == 200
    made = client.post("/admin/tokens", data={"name": "child"}, headers=bearer(secret))
    assert made.status_code == 400 and "CSRF" in made.get_data(as_text=True)
    assert not _SECRET_FIELD.search(made.get_data(as_text=True))
    revoked = client.post("/admin/tokens/robot/revoke", headers=bearer(secret))
    assert revoked.status_code == 200 and "Revoke this token?" in revoked.get_data(as_text=True)
    assert row(app, "child") is None and row(app, "robot").revoked_at is None


def test_page_non_admin_gets_403(app: Flask, client: FlaskClient, auth) -> None:
    make_token(app)
    auth.login(USER, USER_PASSWORD)
    assert client.get("/admin/tokens").status_code == 403
    assert client.get("/admin/tokens/ci/revoke").status_code == 403
    token = csrf_token(client, "/account")
    assert client.post("/admin/tokens", data={"csrf_token": token, "name": "x"}).status_code == 403
    response = client.post("/admin/tokens/ci/revoke", data={"csrf_token": token})
    assert response.status_code == 403
    assert row(app, "ci").revoked_at is None and row(app, "x") is None
