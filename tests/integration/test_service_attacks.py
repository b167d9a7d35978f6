"""Attacks on tokens, the check API, forward auth and the decision log.

Each test is one attack found by a security review of these features, written as the
behaviour the service must have. The attacks that held from the start are in
test_service_attacks_held.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authz import Change
from authz import Rule
from service import create_app
from service import tokens
from service import users
from tests.conftest import ADMIN
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import Backend
from tests.conftest import app_config
from tests.conftest import bearer
from tests.conftest import dispose
from tests.conftest import make_app
from tests.conftest import make_token

API = "/api/v1"
PROXY = "10.0.0.5"
APP_HOST = "app.example.com"
RULES = (
    Rule.of("p", "checker", "/api/v1/check", "POST", "allow"),
    Rule.of("p", "checker", "/api/v1/check/batch", "POST", "allow"),
    # Reports are readable, except one.
    Rule.of("p", "reader", "/reports/*", "GET", "allow"),
    Rule.of("p", "reader", "/reports/secret", "GET", "deny"),
    Rule.of("p", "user", "/app/*", "GET", "allow"),
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(
        tmp_path,
        trusted_proxies=PROXY,
        login_hosts=APP_HOST,
        decision_log="full",
        decision_log_file=str(tmp_path / "decisions.jsonl"),
    )
    with app.app_context():
        app.extensions["authz"].apply(Change.adding(*RULES), actor="test", source="cli")
    yield app
    dispose(app)


def check(client: FlaskClient, secret: str, subject: str, path: str, method: str = "GET"):
    body = {"subject": subject, "path": path, "method": method}
    return client.post(f"{API}/check", json=body, headers=bearer(secret))


def forward(client: FlaskClient, uri: str, headers: dict[str, str] | None = None):
    wanted = {"X-Original-URI": uri, "X-Original-Method": "GET", "X-Original-Host": APP_HOST}
    return client.get(
        "/auth/forward", headers={**wanted, **(headers or {})}, environ_base={"REMOTE_ADDR": PROXY}
    )


# -- F1: the check API decides a different object than the middleware for the same URI -----


@pytest.mark.parametrize("uri", ["/reports/secret?x=1", "/reports/secret#x", "/reports/%73ecret"])
def test_check_never_allows_what_the_middleware_denies_for_the_same_uri(
    app: Flask, client: FlaskClient, uri: str
) -> None:
    checker = make_token(app, "billing", ("checker",))
    reader = make_token(app, "reader", ("reader",))
    # The request itself, to this service and through forward auth: denied.
    assert client.get(uri, headers=bearer(reader)).status_code == 403
    assert forward(client, uri, bearer(reader)).status_code == 403
    # The same request asked through /check by a service that passes the request URI
    # (Express req.originalUrl, Django get_full_path(), nginx $request_uri): allowed.
    answer = check(client, checker, "token:reader", uri)
    assert answer.status_code == 400 or answer.json["allowed"] is False, answer.json


# -- F2: decision log lines can be split by a requester ------------------------------------


@pytest.mark.parametrize("escape", ["%E2%80%A8", "%E2%80%A9", "%C2%85"])
def test_an_anonymous_visitor_cannot_split_a_decision_log_line(
    app: Flask, client: FlaskClient, tmp_path: Path, escape: str
) -> None:
    # Through forward auth, no credentials needed: the proxy asks about the visitor's URI.
    assert forward(client, f"/app/a{escape}b").status_code == 401
    text = (tmp_path / "decisions.jsonl").read_text(encoding="utf-8")
    # str.splitlines() (and JavaScript's line terminators, many log shippers) break there:
    # the decision becomes two fragments that are not JSON, i.e. it vanishes from the log.
    for line in text.splitlines():
        json.loads(line)


# -- F3: forward auth hands every unverified account the same identity ----------------------


def test_two_unverified_accounts_never_share_an_upstream_identity(app: Flask) -> None:
    seen = []
    for email in ("eve@example.com", "mallory@example.com"):
        client = app.test_client()
        assert AuthActions(client).register(email, "a-long-password-1").status_code == 302
        answer = forward(client, "/app/notes")
        seen.append((answer.status_code, answer.headers.get("X-Auth-Subject")))
    # Were they decided as the default role, the upstream, which keys its data by
    # X-Auth-Subject, would see one person: [(200, 'user'), (200, 'user')].
    allowed = [subject for status, subject in seen if status == 200]
    assert len(set(allowed)) == len(allowed), seen
    assert "user" not in allowed, seen
    # An unverified account counts as anonymous here: denied, and told why.
    assert [status for status, _subject in seen] == [403, 403], seen
    answer = forward(client, "/app/notes")
    assert "verify your email" in answer.headers["X-Auth-Reason"]
    # A verified account is itself.
    verified = app.test_client()
    AuthActions(verified).login(USER, "user-password-1")
    answer = forward(verified, "/app/notes")
    assert (answer.status_code, answer.headers["X-Auth-Subject"]) == (200, USER)


# -- F4: the check API ignores account state (deactivated, unverified) ----------------------


def test_check_refuses_a_deactivated_account_as_the_middleware_does(
    app: Flask, client: FlaskClient
) -> None:
    checker = make_token(app, "billing", ("checker",))
    assert check(client, checker, USER, "/app/x").json["allowed"] is True
    with app.app_context():
        users.set_active(USER, False, actor="test", source="cli")
    # The account can no longer log in: every request of its is anonymous here. A service
    # that asks /check about it (its own login, same email) still gets "allowed".
    assert check(client, checker, USER, "/app/x").json["allowed"] is False


def test_check_does_not_apply_rows_planted_for_an_unverified_address(
    app: Flask, client: FlaskClient
) -> None:
    checker = make_token(app, "billing", ("checker",))
    with app.app_context():
        # Granted ahead of time, as the README recommends ("safe: ... nothing more than a
        # new user until they prove they read its mail").
        app.extensions["authz"].apply(
            Change.adding(Rule.of("g", "newhire@example.com", "reader")), actor="t", source="cli"
        )
    squatter = app.test_client()
    registered = AuthActions(squatter).register("newhire@example.com", "a-long-password-1")
    assert registered.status_code == 302
    assert squatter.get("/reports/7").status_code == 403  # the middleware: default role only
    assert check(client, checker, "newhire@example.com", "/reports/7").json["allowed"] is False


# -- F6: a token created on a stale instance inherits rows planted for its name --------------


def test_a_new_token_never_inherits_rows_written_elsewhere_for_its_name(
    tmp_path: Path, database: Backend
) -> None:
    first = make_app(tmp_path, backend=database, poll_interval=30)
    second = create_app(app_config(tmp_path, backend=database, poll_interval=30))
    try:
        with first.app_context():  # someone who may write rows, not create tokens
            first.extensions["authz"].apply(
                Change.adding(Rule.of("g", "token:later", "admin")), actor="m", source="api"
            )
        with second.app_context():  # an admin on another instance, seconds later
            try:
                tokens.create("later", roles=[], actor=ADMIN, source="api")
            except tokens.TokenError:
                return  # refused, as on a single instance: the wanted outcome
            assert tokens.roles_of("later") == []
    finally:
        dispose(first)
        dispose(second)


# -- F7: duplicate JSON keys: the last one is decided ---------------------------------------


def test_a_check_with_a_duplicate_key_is_refused(app: Flask, client: FlaskClient) -> None:
    checker = make_token(app, "billing", ("checker",))
    body = b'{"subject":"anonymous","path":"/reports/7","method":"GET","subject":"%s"}'
    with app.app_context():
        app.extensions["authz"].apply(
            Change.adding(Rule.of("g", USER, "reader")), actor="t", source="cli"
        )
    answer = client.post(
        f"{API}/check",
        data=body % USER.encode(),
        headers={**bearer(checker), "Content-Type": "application/json"},
    )
    # A gateway, a log or a signature check reading the first "subject" sees anonymous;
    # the decision is for user@example.com, and /check does not echo which it decided.
    assert answer.status_code == 400, answer.get_data(as_text=True)


# -- F9: no app-wide body cap: an anonymous POST /login reads any multipart body -------------


def test_an_anonymous_post_is_not_read_past_a_sane_size(app: Flask, client: FlaskClient) -> None:
    import io

    size = 20 * 1024 * 1024
    head = (
        b'--B\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    body = io.BytesIO(head + b"a" * size + b"\r\n--B--\r\n")
    answer = client.post(
        "/login",
        input_stream=body,
        content_type="multipart/form-data; boundary=B",
        headers={"Content-Length": str(len(body.getvalue()))},
    )
    # Refused before it is read: not a 400 (no CSRF token) after spooling it all to disk.
    assert answer.status_code == 413
    assert body.tell() < size


# -- F10: forward auth's role cache can keep a removed role ---------------------------------


def test_x_auth_roles_never_keeps_a_removed_role(app: Flask, monkeypatch) -> None:
    from authz.snapshot import Snapshot

    secret = make_token(app, "svc", ("reader", "admin"))
    headers = {**bearer(secret), "X-Original-URI": "/reports/7", "X-Original-Method": "GET"}
    env = {"REMOTE_ADDR": PROXY}
    real = Snapshot.roles_for
    armed = [True]

    def slow_roles_for(self: Snapshot, subject: str) -> list[str]:
        roles = real(self, subject)  # worker thread 1, on the snapshot it started with
        if armed[0] and subject == "token:svc":
            armed[0] = False
            # Meanwhile: admin is taken from the token, and thread 2 answers a forward
            # request on the new snapshot (which relabels the cache as the new one's).
            with app.app_context():
                app.extensions["authz"].apply(
                    Change.removing(Rule.of("g", "token:svc", "admin")), actor="t", source="cli"
                )
            app.test_client().get("/auth/forward", headers=headers, environ_base=env)
        return roles

    monkeypatch.setattr(Snapshot, "roles_for", slow_roles_for)
    client = app.test_client()
    client.get("/auth/forward", headers=headers, environ_base=env)  # thread 1
    later = client.get("/auth/forward", headers=headers, environ_base=env)
    # Every later answer of this worker, until some unrelated policy change:
    assert "admin" not in later.headers["X-Auth-Roles"].split(","), later.headers["X-Auth-Roles"]


# -- F4b: /check answers for a revoked token's subject -------------------------------------


def test_check_never_allows_a_revoked_token(app: Flask, client: FlaskClient) -> None:
    checker = make_token(app, "billing", ("checker",))
    secret = make_token(app, "ci", ())
    with app.app_context():
        app.extensions["authz"].apply(
            Change.adding(Rule.of("p", "token:ci", "/reports/*", "GET", "allow")),
            actor="t",
            source="cli",
        )
        tokens.revoke("ci", actor="t", source="cli")
    assert client.get("/reports/7", headers=bearer(secret)).status_code == 401
    # The middleware and forward auth refuse the revoked token; /check still allows it
    # (revoke removes g rows only, and /check does not know the subject is dead).
    assert check(client, checker, "token:ci", "/reports/7").json["allowed"] is False


# -- F12: a revision read failing at load makes the next account change go unnoticed -------


def test_a_revocation_reaches_an_instance_whose_first_revision_read_failed(
    tmp_path: Path, database: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from authz.store import PolicyStore

    first = make_app(tmp_path, backend=database, poll_interval=30)
    with first.app_context():
        _token, secret = tokens.create("ci", roles=[], actor="t", source="cli")
        # A token granted directly (valid policy; revoke removes g rows only).
        first.extensions["authz"].apply(
            Change.adding(Rule.of("p", "token:ci", "/reports/*", "GET", "allow")),
            actor="t",
            source="cli",
        )
    real = PolicyStore.revisions
    calls = [0]

    def flaky(self: PolicyStore) -> tuple[int, int]:
        calls[0] += 1
        if calls[0] == 1:  # a dropped connection, once, right after the rows were read
            raise sa.exc.OperationalError("SELECT revision", {}, Exception("connection reset"))
        return real(self)

    monkeypatch.setattr(PolicyStore, "revisions", flaky)
    second = create_app(app_config(tmp_path, backend=database, poll_interval=30))
    monkeypatch.setattr(PolicyStore, "revisions", real)
    try:
        client = second.test_client()
        assert client.get("/reports/7", headers=bearer(secret)).status_code != 401  # cached
        with first.app_context():
            tokens.revoke("ci", actor="t", source="cli")
        second.extensions["authz"].refresh()  # the revision poll that carries the revocation
        # A poll recording an accounts revision it had never seen must clear the cache too,
        # or the revoked token keeps working here until some other account change.
        assert client.get("/reports/7", headers=bearer(secret)).status_code == 401
    finally:
        dispose(first)
        dispose(second)
