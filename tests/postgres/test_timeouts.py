"""A database that accepts connections and never answers: 503 within the timeout, never a hang.

A real app (create_app on PostgreSQL) talks to the server through a TCP proxy of the
test's own (tests/tcpproxy.py), which the test silences: connections stay open and the
kernel keeps acknowledging, so only the service's own deadlines can notice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url

from service import create_app
from service import users
from service.bootstrap import init_database
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import app_config
from tests.conftest import dispose
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.postgres

CONNECT_TIMEOUT = 2  # libpq's minimum
STATEMENT_TIMEOUT = 1
#: The longest any request may take while the database is silent: a connect timeout,
#: or a statement's deadline, plus scheduling slack on a busy machine.
BOUND = CONNECT_TIMEOUT + STATEMENT_TIMEOUT + 1.5


@pytest.fixture
def proxy(pg_url: str) -> Iterator[TcpProxy]:
    url = make_url(pg_url)
    with TcpProxy((url.host or "127.0.0.1", url.port or 5432)) as started:
        yield started


def schema_url(pg_url: str, schema: str, port: int | None = None) -> str:
    """The server URL confined to ``schema``, through ``port`` when given."""
    url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    if port is not None:
        url = url.set(host="127.0.0.1", port=port)
    return url.render_as_string(hide_password=False)


def build(tmp_path: Any, url: str) -> Flask:
    return create_app(
        app_config(
            tmp_path,
            database_url=url,
            poll_interval=0.5,
            db_connect_timeout=CONNECT_TIMEOUT,
            db_statement_timeout=STATEMENT_TIMEOUT,
        )
    )


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def eventually(condition: Callable[[], bool], within: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            pytest.fail(f"{what}: not within {within} s")
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.fixture
def app(tmp_path: Any, pg_url: str, pg_schema: str, proxy: TcpProxy) -> Iterator[Flask]:
    built = build(tmp_path, schema_url(pg_url, pg_schema, proxy.port))
    with built.app_context():
        init_database(admin_email=ADMIN, admin_password=ADMIN_PASSWORD, actor="test")
        users.create(USER, USER_PASSWORD, actor="test", source="cli")
    yield built
    proxy.resume()
    dispose(built)


def test_every_connection_carries_the_timeouts(app: Flask) -> None:
    from service.extensions import db

    with app.app_context():
        value = db.session.execute(db.text("SHOW statement_timeout")).scalar_one()
        db.session.rollback()
    assert value == f"{STATEMENT_TIMEOUT}s"


def test_a_silent_database_gives_503_within_the_timeout_and_recovery_follows(
    app: Flask, proxy: TcpProxy
) -> None:
    user = app.test_client()
    assert AuthActions(user).login().status_code == 302
    assert user.get("/").status_code == 200
    visitor: FlaskClient = app.test_client()

    proxy.silence()
    silenced = time.monotonic()
    # A logged-in request needs its session checked; once the revision poll has failed
    # the cached session is no longer trusted and the database is asked: 503.
    statuses = []
    while True:
        response, took = timed(lambda: user.get("/"))
        assert took < BOUND, f"a request waited {took:.1f} s on a silent database"
        statuses.append(response.status_code)
        if response.status_code == 503:
            break
        assert response.status_code == 200
        assert time.monotonic() - silenced < 2 * BOUND, statuses
        time.sleep(0.1)

    # A visitor is decided from the snapshot in memory: served at once.
    response, took = timed(lambda: visitor.get("/login"))
    assert response.status_code == 200 and took < 1
    # A login needs the database: 503 within the bound, never a hang, never a 500.
    login = AuthActions(visitor)
    response, took = timed(lambda: login.login(ADMIN, ADMIN_PASSWORD))
    assert response.status_code == 503 and took < BOUND
    # The API answers the same way.
    response, took = timed(lambda: user.get("/api/v1/users"))
    assert response.status_code == 503 and took < BOUND

    proxy.resume()
    eventually(lambda: user.get("/").status_code == 200, 3 * BOUND, "recovery")
    assert login.login(ADMIN, ADMIN_PASSWORD).status_code == 302
    assert visitor.get("/admin/").status_code == 200


def test_start_up_on_a_silent_database_serves_503_then_recovers(
    tmp_path: Any, pg_url: str, pg_schema: str, proxy: TcpProxy
) -> None:
    ready = build(tmp_path / "ready", schema_url(pg_url, pg_schema))
    with ready.app_context():
        init_database(admin_email=ADMIN, admin_password=ADMIN_PASSWORD, actor="test")
    dispose(ready)

    proxy.silence()
    app, took = timed(lambda: build(tmp_path, schema_url(pg_url, pg_schema, proxy.port)))
    try:
        assert took < CONNECT_TIMEOUT + 1.5, f"start-up blocked {took:.1f} s"
        assert proxy.accepted >= 1  # it did try, and the proxy answered nothing
        client = app.test_client()
        response, took = timed(lambda: client.get("/login"))
        assert response.status_code == 503 and took < BOUND
        # Each request waits at most one connect timeout (its own attempt to load).
        for _ in range(3):
            response, took = timed(lambda: client.get("/login"))
            assert response.status_code == 503 and took < CONNECT_TIMEOUT + 1.0

        proxy.resume()
        eventually(lambda: client.get("/login").status_code == 200, 3 * BOUND, "recovery")
        assert client.get("/admin/").status_code in (302, 401)  # loaded: decided, denied
    finally:
        proxy.resume()
        dispose(app)


def test_existing_connections_black_holed_mid_flight(app: Flask, proxy: TcpProxy) -> None:
    """The poll keeps its thread and its pace: it fails within the deadline, then recovers."""
    engine = app.extensions["authz"]
    poller = app.extensions["authz.poller"]
    before = engine.verified_at
    proxy.silence()
    time.sleep(BOUND + 1)
    assert poller._thread is not None and poller._thread.is_alive()
    stale = engine.verified_at
    assert time.monotonic() - stale > 1  # nothing verified while silent
    proxy.resume()
    eventually(lambda: engine.verified_at > max(stale, before), 3 * BOUND, "the poll recovers")
