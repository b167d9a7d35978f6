"""Sessions: one row per login, lifetimes, and lookups cached per instance but never
trusted past a session-ending change."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from service import create_app
from service import users
from service.extensions import db
from service.models import UserSession
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
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
    """The statements the request itself ran (not the revision poller's, in its thread)."""
    statements: list[str] = []
    me = threading.get_ident()

    def record(_c, _cur, statement, *_a):  # noqa: ANN001, ANN202
        if threading.get_ident() == me:
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
    # Both ways an instance hears of changes stop (on PostgreSQL the listener refreshes too).
    for name in ("authz.poller", "authz.listener"):
        worker = polled.extensions.get(name)
        if worker is not None:
            worker.stop()
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


# -- one row per login ----------------------------------------------------------------


def cookie_id(client: FlaskClient, app: Flask) -> str:
    """The session id the client's signed cookie carries."""
    value = client.get_cookie("session")
    assert value is not None
    data = app.session_interface.get_signing_serializer(app).loads(value.value)  # type: ignore[attr-defined]
    return str(data["_user_id"])


def session_rows(app: Flask) -> list[UserSession]:
    with app.app_context():
        rows = list(db.session.scalars(sa.select(UserSession).order_by(UserSession.id)))
        db.session.expunge_all()
        return rows


def shift(app: Flask, **columns: float) -> None:
    """Move every session's time columns back by the given seconds."""
    with app.app_context():
        for row in db.session.scalars(sa.select(UserSession)):
            for name, seconds in columns.items():
                setattr(row, name, getattr(row, name) - dt.timedelta(seconds=seconds))
        db.session.commit()


def test_each_login_gets_a_new_id_stored_only_as_its_hash(app: Flask) -> None:
    client = app.test_client()
    AuthActions(client).login()
    first = cookie_id(client, app)
    AuthActions(client).login()
    second = cookie_id(client, app)
    assert first != second and len(second) >= 43  # 256 bits, url-safe base64
    rows = session_rows(app)
    assert [r.token_hash for r in rows] == [hashlib.sha256(second.encode()).hexdigest()]
    # Nothing stored is a usable cookie: the raw ids appear in no column.
    stored = repr([(r.token_hash, r.ip, r.user_agent) for r in rows])
    assert first not in stored and second not in stored


def test_a_planted_cookie_is_replaced_at_login_and_ends(app: Flask) -> None:
    """Session fixation: the attacker's own session cookie, planted in the victim's
    browser, neither becomes the victim's session nor survives the victim's login."""
    attacker = app.test_client()
    AuthActions(attacker).login(ADMIN, ADMIN_PASSWORD)
    planted = attacker.get_cookie("session").value
    victim = app.test_client()
    victim.set_cookie("session", planted)
    AuthActions(victim).login()
    assert victim.get_cookie("session").value != planted
    assert victim.get("/admin/").status_code == 403  # the victim is themself, not the admin
    replay = app.test_client()
    replay.set_cookie("session", planted)
    assert replay.get("/").status_code == 302


def test_an_idle_session_ends(app: Flask) -> None:
    client = app.test_client()
    AuthActions(client).login()
    assert client.get("/").status_code == 200
    shift(app, last_seen_at=8 * 3600 - 30)
    assert client.get("/").status_code == 200  # 30 s left, and the visit renews it
    shift(app, last_seen_at=8 * 3600 - 30)
    assert client.get("/").status_code == 200
    shift(app, last_seen_at=8 * 3600 + 1)
    assert client.get("/").status_code == 302


def test_a_session_ends_at_its_absolute_lifetime_however_busy(app: Flask) -> None:
    client = app.test_client()
    AuthActions(client).login()
    shift(app, created_at=30 * 86400 - 60)
    assert client.get("/").status_code == 200
    shift(app, created_at=61)
    assert client.get("/").status_code == 302


def test_cached_sessions_end_at_their_lifetimes_too(tmp_path: Path) -> None:
    app = make_app(tmp_path, poll_interval=POLL, session_idle=1, session_absolute=2)
    try:
        busy, idle = app.test_client(), app.test_client()
        AuthActions(busy).login()
        AuthActions(idle).login()
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # busy: a request every 0.1 s
            assert busy.get("/").status_code == 200
            time.sleep(0.1)
        assert idle.get("/").status_code == 302  # unused for over a second
        time.sleep(max(0.0, 2.1 - (time.monotonic() - started)))
        assert busy.get("/").status_code == 302  # two seconds old, busy or not
    finally:
        dispose(app)


def test_last_seen_is_written_at_most_once_a_minute(app: Flask) -> None:
    client = app.test_client()
    AuthActions(client).login()

    def writes() -> list[str]:
        statements = queries_during(app, lambda: [client.get("/") for _ in range(5)])
        return [s for s in statements if s.lstrip().upper().startswith("UPDATE")]

    assert writes() == []
    shift(app, last_seen_at=61)
    assert len(writes()) == 1  # the first of the five; the next four see it fresh
    assert writes() == []


# -- the race between a lookup and its cache write ------------------------------------


def in_the_lookup(app: Flask, action) -> list[int]:  # noqa: ANN001
    """Run ``action`` once, in another thread, right after the request's session read."""
    fired: list[int] = []

    def after(_c, _cur, statement, *_a):  # noqa: ANN001, ANN202
        if fired or "FROM user_session JOIN users" not in statement:
            return
        fired.append(1)
        worker = threading.Thread(target=action)
        worker.start()
        worker.join(10)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "after_cursor_execute", after)
    return fired


@pytest.mark.parametrize("where", ["here", "elsewhere"])
def test_a_deactivation_between_the_lookup_and_the_cache_write_is_not_cached_over(
    polled: Flask, other: Flask, where: str
) -> None:
    client = polled.test_client()
    AuthActions(client).login()

    def deactivate() -> None:
        writer = polled if where == "here" else other
        with writer.app_context():
            users.set_active(USER, False, actor="test", source="cli")
        if where == "elsewhere":
            polled.extensions["authz"].refresh()  # this instance's poll sees it now

    fired = in_the_lookup(polled, deactivate)
    # This request read the session before the deactivation committed: served.
    assert client.get("/").status_code == 200
    assert fired == [1]
    # The result it read must not have been cached: the next request is anonymous.
    assert len(polled.extensions["authz.sessions"]) == 0
    assert client.get("/").status_code == 302


def test_an_ended_session_replayed_on_another_instance_is_refused(
    polled: Flask, other: Flask
) -> None:
    client = polled.test_client()
    AuthActions(client).login()
    stolen = client.get_cookie("session").value
    thief = other.test_client()
    thief.set_cookie("session", stolen)
    assert thief.get("/").status_code == 200  # now cached on the other instance
    AuthActions(client).logout()  # ends the session on the first instance
    assert eventually(lambda: thief.get("/").status_code == 302)
    fresh = other.test_client()  # and not cached there: refused on the first request
    fresh.set_cookie("session", stolen)
    assert fresh.get("/").status_code == 302


def test_an_ordinary_request_does_not_resend_the_session_cookie(app: Flask) -> None:
    """The server-side row carries the lifetimes: the cookie is set at login, not per page."""
    client = app.test_client()
    assert AuthActions(client).login(USER, USER_PASSWORD).status_code == 302
    client.get("/")  # the first page after login may store the new CSRF token
    response = client.get("/")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
