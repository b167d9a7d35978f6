"""Session lookups: cached per instance, never trusted past a session-ending change."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import event

from service import create_app
from service import users
from service.extensions import db
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import app_config
from tests.conftest import dispose
from tests.conftest import make_app

POLL = 0.05


@pytest.fixture
def polled(tmp_path: Path) -> Iterator[Flask]:
    """An app with its revision poller running, so session lookups are cached."""
    app = make_app(tmp_path, poll_interval=POLL)
    yield app
    dispose(app)


@pytest.fixture
def other(tmp_path: Path, polled: Flask) -> Iterator[Flask]:
    """A second instance on the same database."""
    app = create_app(app_config(tmp_path, poll_interval=POLL))
    yield app
    dispose(app)


def queries_during(app: Flask, action) -> list[str]:  # noqa: ANN001
    statements: list[str] = []

    def record(_c, _cur, statement, *_a):  # noqa: ANN001, ANN202
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return statements


def eventually(check, timeout: float = 2.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_a_known_session_is_resolved_without_a_query(polled: Flask) -> None:
    client = polled.test_client()
    AuthActions(client).login()
    assert client.get("/").status_code == 200  # resolves and caches the session

    def request() -> None:
        assert client.get("/").status_code == 200

    assert queries_during(polled, request) == []


def test_without_the_poller_every_request_asks_the_database(app: Flask) -> None:
    client = app.test_client()
    AuthActions(client).login()
    client.get("/")
    statements = queries_during(app, lambda: client.get("/"))
    assert any("user_session" in s for s in statements)


def test_deactivation_on_this_instance_ends_the_cached_session_at_once(polled: Flask) -> None:
    client = polled.test_client()
    AuthActions(client).login()
    assert client.get("/").status_code == 200
    with polled.app_context():
        users.set_active(USER, False, actor="test", source="cli")
    assert client.get("/").status_code == 302


def test_logout_ends_a_replayed_cached_session_at_once(polled: Flask) -> None:
    client = polled.test_client()
    auth = AuthActions(client)
    auth.login()
    assert client.get("/").status_code == 200
    stolen = client.get_cookie("session").value
    auth.logout()
    thief = polled.test_client()
    thief.set_cookie("session", stolen)
    assert thief.get("/").status_code == 302


@pytest.mark.parametrize("change", ["deactivate", "password"])
def test_a_change_on_another_instance_ends_the_cached_session(
    polled: Flask, other: Flask, change: str
) -> None:
    client = polled.test_client()
    AuthActions(client).login()
    assert client.get("/").status_code == 200
    with other.app_context():
        if change == "deactivate":
            users.set_active(USER, False, actor="test", source="cli")
        else:
            users.set_password(USER, "another-password-9", actor="test", source="cli")
    assert eventually(lambda: client.get("/").status_code == 302)


def test_cached_sessions_are_not_trusted_when_the_poll_stops(polled: Flask) -> None:
    client = polled.test_client()
    AuthActions(client).login()
    client.get("/")
    polled.extensions["authz.poller"].stop()
    time.sleep(2 * POLL + 0.6)
    statements = queries_during(polled, lambda: client.get("/"))
    assert any("user_session" in s for s in statements)


def test_unknown_session_tokens_are_never_cached(polled: Flask) -> None:
    cache = polled.extensions["authz.sessions"]
    client = polled.test_client()
    for i in range(50):
        with client.session_transaction() as session:
            session["_user_id"] = f"forged-token-{i}"
            session["_fresh"] = True
        assert client.get("/").status_code == 302
    assert len(cache) == 0
