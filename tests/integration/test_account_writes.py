"""Account writes stay off the policy write path; the lockout guard reads all accounts rarely.

A registration adds one role row (a policy change); a logout, a password change or a
session's end changes no policy row at all, so none of them takes the engine's write lock
or runs the guard. Guarded changes ask only whether the last witness still holds the
editor, and read every active account only when it no longer does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authz import Change
from authz import LockoutRefused
from authz import PolicyEngine
from authz import Rule
from service import editing
from service import users
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import csrf_token


@dataclass
class Watch:
    """Counts the engine's write-lock acquisitions and full reads of active accounts."""

    locks: int = 0
    full_reads: int = 0
    lookups: list[str] = field(default_factory=list)


class CountingLock:
    def __init__(self, watch: Watch) -> None:
        self._lock = threading.Lock()
        self._watch = watch

    def __enter__(self) -> None:
        self._watch.locks += 1
        self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)


@pytest.fixture
def watch(app: Flask) -> Iterator[Watch]:
    engine: PolicyEngine = app.extensions["authz"]
    seen = Watch()
    full, one = engine.active_subjects, engine.is_active
    assert full is not None and one is not None

    def every(session: Any) -> Any:
        seen.full_reads += 1
        return full(session)

    def single(session: Any, subject: str) -> bool:
        seen.lookups.append(subject)
        return one(session, subject)

    engine.active_subjects, engine.is_active = every, single
    engine._write_lock = CountingLock(seen)  # type: ignore[assignment]
    yield seen
    engine.active_subjects, engine.is_active = full, one


def register(client: FlaskClient, email: str) -> None:
    token = csrf_token(client, "/register")
    data = {"email": email, "password": "new-password-1", "confirm": "new-password-1"}
    response = client.post("/register", data={**data, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)


def test_logout_and_password_change_take_no_policy_lock_and_bump_no_revision(
    app: Flask, client: FlaskClient, auth: AuthActions, watch: Watch
) -> None:
    engine: PolicyEngine = app.extensions["authz"]
    revision = engine.revision
    auth.login(USER, USER_PASSWORD)
    token = csrf_token(client, "/account")
    response = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current": USER_PASSWORD,
            "password": "changed-password-1",
            "confirm": "changed-password-1",
        },
    )
    assert response.status_code in (200, 302), response.get_data(as_text=True)
    with app.app_context():
        assert users.authenticate(USER, "changed-password-1") is not None
    auth.logout()
    assert (watch.locks, watch.full_reads, watch.lookups) == (0, 0, [])
    assert engine.revision == revision


def test_a_registration_adds_its_row_without_reading_every_account(
    app: Flask, client: FlaskClient, auth: AuthActions, watch: Watch
) -> None:
    engine: PolicyEngine = app.extensions["authz"]
    revision = engine.revision
    register(client, "new@example.com")
    assert Rule.of("g", "new@example.com", "user") in engine.rules()
    assert engine.revision == revision + 1
    assert watch.full_reads <= 1  # at most once, to find a witness the first time
    first = watch.full_reads
    register(app.test_client(), "newer@example.com")
    assert watch.full_reads == first


def test_guarded_edits_ask_about_one_witness_until_it_loses_the_editor(
    app: Flask, watch: Watch
) -> None:
    engine: PolicyEngine = app.extensions["authz"]
    who = editing.Who("test", "cli")
    with app.app_context():
        editing.add(Rule.of("p", "user", "/one", "GET", "allow"), who)
        reads = watch.full_reads
        for n in range(5):
            editing.add(Rule.of("p", "user", f"/more{n}", "GET", "allow"), who)
        users.set_active(USER, False, actor="test", source="cli")  # not the witness
        assert watch.full_reads == reads
        assert watch.lookups[-1] == ADMIN
        # Taking the editor from the witness, the only admin: every account is read,
        # and the change is refused.
        with pytest.raises(LockoutRefused):
            editing.unassign(ADMIN, "admin", who)
        assert watch.full_reads == reads + 1
        assert Rule.of("g", ADMIN, "admin") in engine.rules()


def test_deactivating_the_witness_is_refused_when_nobody_else_holds_the_editor(
    app: Flask, admin: FlaskClient
) -> None:
    with app.app_context():
        with pytest.raises(LockoutRefused):
            users.set_active(ADMIN, False, actor="test", source="cli")
        assert users.require(ADMIN).active
        # With a second active admin, the first may go.
        users.create(
            "second@example.com", "second-password-1", roles=["admin"], actor="test", source="cli"
        )
        assert users.set_active(ADMIN, False, actor="test", source="cli") is True
        assert users.set_active(ADMIN, False, actor="test", source="cli") is False


@pytest.fixture
def admin(client: FlaskClient, auth: AuthActions) -> FlaskClient:
    auth.login(ADMIN, ADMIN_PASSWORD)
    return client


def test_a_change_elsewhere_does_not_refuse_an_open_rule_form(
    app: Flask, admin: FlaskClient
) -> None:
    """The issue's example: a sign-up while an admin edits no longer refuses the edit."""
    home = Rule.of("p", "user", "/", "GET", "allow")
    path = f"/admin/rules/{home.id}/edit"
    page = admin.get(path).get_data(as_text=True)
    assert 'name="revision"' in page
    register(app.test_client(), "someone@example.com")
    app.extensions["authz"].apply(
        Change.adding(Rule.of("g", "someone@example.com", "admin")), actor="t", source="cli"
    )
    token = csrf_token(admin, path)
    response = admin.post(
        path,
        data={
            "csrf_token": token,
            "revision": "1",
            "subject": "user",
            "path": "/",
            "methods": "GET|HEAD",
            "effect": "allow",
        },
    )
    assert response.status_code == 302
    assert Rule.of("p", "user", "/", "GET|HEAD", "allow") in app.extensions["authz"].rules()
