"""Service tokens: created, used as bearer credentials, expired and revoked; hashes only."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from authz import Change
from authz import Rule
from service import create_app
from service import tokens
from service.extensions import db
from service.models import ServiceToken
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import Backend
from tests.conftest import app_config
from tests.conftest import bearer
from tests.conftest import dispose
from tests.conftest import make_app
from tests.conftest import make_token

API = "/api/v1"
READER = Rule.of("p", "reader", "/api/v1/policy/*", "GET", "allow")


def eventually(call, status: int, within: float = 20.0) -> bool:
    """Whether ``call()`` answers ``status`` within ``within`` seconds (polls propagate).

    Generous: on a loaded machine a poll may come late; it must come.
    """
    deadline = time.monotonic() + within
    seen = []
    while True:
        seen.append(call().status_code)
        if seen[-1] == status:
            return True
        if time.monotonic() > deadline:
            raise AssertionError(f"wanted {status}, got {sorted(set(seen))} for {within} s")
        time.sleep(0.05)


def test_secret_has_the_product_prefix_and_only_its_keyed_hash_is_stored(app: Flask) -> None:
    secret = make_token(app)
    assert secret.startswith("authz_") and len(secret) == len("authz_") + 43
    with app.app_context():
        row = db.session.scalar(sa.select(ServiceToken))
        assert row.name == "ci" and row.subject == "token:ci"
        assert secret not in (row.token_hash, row.hint) and len(row.token_hash) == 64
        assert row.hint == secret[: tokens.HINT_LENGTH]
        # Keyed: the plain SHA-256 of the secret is not what is stored.
        import hashlib

        assert row.token_hash != hashlib.sha256(secret.encode()).hexdigest()
        stored = " ".join(
            str(v) for r in db.session.execute(sa.text("SELECT * FROM service_token")) for v in r
        )
        assert secret not in stored
        assert Rule.of("g", "token:ci", "admin") in app.extensions["authz"].snapshot.ruleset


def test_bearer_token_reads_and_writes_without_csrf_or_cookie(app: Flask, client: FlaskClient):
    secret = make_token(app)
    response = client.get(f"{API}/policy/rules", headers=bearer(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    revision = response.get_json()["revision"]
    created = client.post(
        f"{API}/policy/rules",
        json={"subject": "reader", "path": "/x", "methods": "GET", "revision": revision},
        headers=bearer(secret),
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    assert "Set-Cookie" not in created.headers
    with app.app_context():
        entries = app.extensions["authz"].store.audit_entries(limit=1)
    assert entries[0].actor == "token:ci"


def test_a_cookie_session_write_still_needs_csrf(app: Flask, client: FlaskClient, auth) -> None:
    auth.login(ADMIN, ADMIN_PASSWORD)
    response = client.post(
        f"{API}/policy/rules", json={"subject": "reader", "path": "/x", "methods": "GET"}
    )
    assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)


def test_bad_tokens_get_401_with_bearer_challenge(app: Flask, client: FlaskClient) -> None:
    good = make_token(app)
    for secret in ("nope", "authz_" + "A" * 43, good[:-1] + ("A" if good[-1] != "A" else "B"), ""):
        response = client.get(f"{API}/policy/rules", headers=bearer(secret))
        assert response.status_code == 401, secret
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert response.mimetype == "application/problem+json"


def test_a_token_is_decided_by_its_roles_only(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        app.extensions["authz"].apply(Change.adding(READER), actor="t", source="t")
    secret = make_token(app, "reader", roles=("reader",))
    assert client.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 200
    assert client.get(f"{API}/users", headers=bearer(secret)).status_code == 403
    assert client.get("/admin/", headers=bearer(secret)).status_code == 403
    # No role at all: nothing beyond what anonymous may do.
    bare = make_token(app, "bare", roles=())
    assert client.get(f"{API}/policy/rules", headers=bearer(bare)).status_code == 403
    assert client.get("/login", headers=bearer(bare)).status_code == 403


def test_revoked_token_is_refused_at_once_here_and_on_another_instance(
    tmp_path: Path, database: Backend
) -> None:
    first = make_app(tmp_path, backend=database, poll_interval=0.05)
    second = create_app(app_config(tmp_path, backend=database, poll_interval=0.05))
    try:
        secret = make_token(first)
        one, two = first.test_client(), second.test_client()
        assert one.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 200
        # The second instance sees the token's role at its next poll.
        assert eventually(lambda: two.get(f"{API}/policy/rules", headers=bearer(secret)), 200)
        with first.app_context():
            revoked = tokens.revoke("ci", actor="test", source="test")
            assert tokens.state(revoked) == "revoked"
        assert one.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 401
        assert eventually(lambda: two.get(f"{API}/policy/rules", headers=bearer(secret)), 401)
        # Its role assignment is gone there too (with the next poll: a 401 may come first,
        # from the database, when the cache is not trusted on a loaded machine).
        deadline = time.monotonic() + 20
        while Rule.of("g", "token:ci", "admin") in second.extensions["authz"].rules():
            assert time.monotonic() < deadline, "the revocation's rows never reached it"
            time.sleep(0.05)
    finally:
        dispose(first)
        dispose(second)


def test_expired_token_is_refused(app: Flask, client: FlaskClient) -> None:
    secret = make_token(app, expires_days=1)
    assert client.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 200
    with app.app_context():
        db.session.execute(
            sa.update(ServiceToken).values(
                expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            )
        )
        db.session.commit()
        assert tokens.state(tokens.require("ci")) == "expired"
    assert client.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 401


def test_last_use_is_recorded_at_most_once_a_minute(app: Flask, client: FlaskClient) -> None:
    secret = make_token(app)
    with app.app_context():
        assert tokens.require("ci").last_used_at is None
    client.get(f"{API}/policy/rules", headers=bearer(secret))
    with app.app_context():
        first = tokens.require("ci").last_used_at
    assert first is not None
    client.get(f"{API}/policy/rules", headers=bearer(secret))
    with app.app_context():
        db.session.expire_all()
        assert tokens.require("ci").last_used_at == first


def test_names_are_checked_and_never_reused(app: Flask) -> None:
    make_token(app)
    with app.app_context():
        for bad in ("CI", "ci bot", "", "x" * 64, "token:"):
            try:
                tokens.create(bad, actor="t", source="t")
            except tokens.TokenError as e:
                assert e.field == "name"
            else:
                raise AssertionError(bad)
        try:
            tokens.create("other", roles=("nosuchrole",), actor="t", source="t")
        except tokens.TokenError as e:
            assert e.field == "roles" and "no role" in e.message
        else:
            raise AssertionError("an unknown role was accepted")
        tokens.revoke("ci", actor="t", source="t")
        try:
            tokens.create("ci", actor="t", source="t")
        except tokens.TokenError as e:
            assert "exists" in e.message
        else:
            raise AssertionError("a revoked name was reused")


def test_a_token_is_never_taken_for_the_account_with_its_row_id(app: Flask, client) -> None:
    # Token 1 and account 1 share a row id; a token granted the account pages must not
    # see, or act on, account 1 (the admin).
    secret = make_token(app, "acct", roles=("user",))
    page = client.get("/account", headers=bearer(secret))
    assert ADMIN not in page.get_data(as_text=True)
    assert page.status_code in (302, 401, 403)
    changed = client.post(
        "/account/password",
        data={
            "current": ADMIN_PASSWORD,
            "password": "new-password-99",
            "confirm": "new-password-99",
        },
        headers=bearer(secret),
    )
    assert changed.status_code in (302, 400, 401, 403)
    assert ADMIN not in changed.get_data(as_text=True)
    with app.app_context():
        from service import users

        assert users.authenticate(ADMIN, ADMIN_PASSWORD) is not None


def test_a_rejected_token_is_an_auth_event_naming_only_its_start(
    app: Flask, client: FlaskClient, caplog
) -> None:
    secret = make_token(app)
    with app.app_context():
        tokens.revoke("ci", actor="t", source="t")
    with caplog.at_level("INFO", logger="service.events"):
        assert client.get(f"{API}/policy/rules", headers=bearer(secret)).status_code == 401
    lines = [r.getMessage() for r in caplog.records if "token_rejected" in r.getMessage()]
    assert len(lines) == 1 and secret[: tokens.HINT_LENGTH] in lines[0]
    assert secret not in lines[0]


def test_a_bearer_request_neither_reads_nor_sets_the_cookie_session(
    app: Flask, client: FlaskClient, auth
) -> None:
    auth.login(ADMIN, ADMIN_PASSWORD)  # the client now holds an admin's session cookie
    bare = make_token(app, "bare", roles=())
    # The admin's cookie rides along, but a bearer request is decided on the token alone.
    assert client.get(f"{API}/policy/rules", headers=bearer(bare)).status_code == 403
    assert client.get("/admin/", headers=bearer(bare)).status_code == 403
    secret = make_token(app, "writer")
    # An editor form post with a token: no session is opened, none is saved.
    response = client.get("/admin/rules", headers=bearer(secret))
    assert response.status_code == 200 and "Set-Cookie" not in response.headers
    # The cookie session is still there for cookie requests.
    assert client.get("/admin/rules").status_code == 200


def test_a_revocation_racing_a_cached_touch_is_not_undone(app: Flask) -> None:
    # A cache hit due for a touch re-stores the entry; a clear (a revocation) landing
    # between the hit and that store must win.
    with app.app_context():
        cache = tokens.TokenCache(app.extensions["authz"], poll_interval=60)
        app.extensions["authz"].verified_at = time.monotonic()
        user = tokens.TokenUser(1, "ci", None, 0.0)
        cache.store("digest", user, cache.generation)
        generation = cache.generation
        assert cache.get("digest") == user
        cache.clear()  # the revocation arrives
        cache.store("digest", user, generation)  # the stale store
        assert cache.get("digest") is None
