"""/healthz, /readyz and /metrics: reachable through policy rows, honest about the worker."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from authz import Change
from authz import Rule
from service import create_app
from service import users
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import USER_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import Backend
from tests.conftest import app_config
from tests.conftest import dispose
from tests.conftest import make_app


def raw_insert(app: Flask, ptype: str, *values: str) -> int:
    """Insert one casbin_rule row around the engine (as a hand edit would); return its id."""
    columns = ["ptype", *(f"v{i}" for i in range(len(values)))]
    params = {"ptype": ptype, **{f"v{i}": v for i, v in enumerate(values)}}
    sql = (
        f"INSERT INTO casbin_rule ({', '.join(columns)}) "  # noqa: S608 - test-made names
        f"VALUES ({', '.join(':' + c for c in columns)}) RETURNING id"
    )
    with app.extensions["authz"].store.engine.begin() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


# -- /healthz -----------------------------------------------------------------------------


def test_healthz_answers_anyone(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json is not None and response.json["status"] == "alive"


def test_probes_are_reachable_through_policy_rows_only(app: Flask, client: FlaskClient) -> None:
    """No code exemption: without its row, /readyz is refused like any other path."""
    app.extensions["authz"].apply(
        Change.removing(Rule.of("p", "anonymous", "/readyz", "GET", "allow")),
        actor="test",
        source="cli",
    )
    assert client.get("/readyz").status_code == 302  # to the login page
    assert client.get("/readyz", headers={"Accept": "application/json"}).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.post("/healthz").status_code != 200  # GET only


# -- /readyz ------------------------------------------------------------------------------


def test_readyz_reports_a_current_worker(app: Flask, client: FlaskClient) -> None:
    body = client.get("/readyz").json
    revision = app.extensions["authz"].revision
    assert body is not None
    assert body["ready"] is True and body["problems"] == []
    assert body["database"] == "ok"
    assert body["policy_loaded"] is True
    assert body["revision"] == body["database_revision"] == revision
    assert body["lag_seconds"] == 0.0
    assert body["bad_rows_count"] == 0 and body["bad_rows"] == []
    assert body["refused"] is None
    assert isinstance(body["pid"], int)


def test_readyz_lists_a_skipped_bad_row(app: Flask, client: FlaskClient) -> None:
    """An over-long allow row is skipped (it can only deny) and named on /readyz."""
    row_id = raw_insert(app, "p", "user", "/probe", "GET", "allow", "x")
    app.extensions["authz"].load()
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json
    assert body is not None and body["bad_rows_count"] == 1
    (bad,) = body["bad_rows"]
    assert bad == {"id": row_id, "ptype": "p"}  # no values or reasons on a public probe


def test_a_refused_policy_makes_readyz_unavailable(app: Flask, client: FlaskClient) -> None:
    """A bad deny row could grant if skipped: the policy is refused, and /readyz is 503."""
    raw_insert(app, "p", "user", "/zzz", "GET ", "deny")
    app.extensions["authz"].load()
    assert app.extensions["authz"].refused is not None
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_readyz_reports_lag_behind_another_instance(tmp_path: Path) -> None:
    """A worker that does not see a newer revision says how far behind it is, then 503."""
    app = make_app(tmp_path, ready_max_lag=0.2)
    other = create_app(app_config(tmp_path))
    try:
        client = app.test_client()
        before = app.extensions["authz"].revision
        with other.app_context():
            other.extensions["authz"].apply(
                Change.adding(Rule.of("p", "user", "/new", "GET", "allow")),
                actor="other",
                source="cli",
            )
        time.sleep(0.3)
        response = client.get("/readyz")
        body = response.json
        assert body is not None
        assert body["revision"] == before
        assert body["database_revision"] == before + 1
        assert body["lag_seconds"] >= 0.3
        assert response.status_code == 503
        assert any("behind the database" in p for p in body["problems"])
        # Once it reloads, it is current and ready again.
        app.extensions["authz"].refresh()
        response = client.get("/readyz")
        assert response.status_code == 200 and response.json["lag_seconds"] == 0.0
    finally:
        dispose(other)
        dispose(app)


def test_readyz_does_not_hang_on_a_silent_database(tmp_path: Path, backend: Backend) -> None:
    """A database that holds every reader waiting: /readyz answers 503 within its timeout.

    Another process's exclusive lock makes every read wait for SQLite's busy timeout, as a
    server that accepts connections but never answers would. Repeated probes share one
    stuck query rather than piling up threads.
    """
    if backend.name != "sqlite":
        pytest.skip("a silent PostgreSQL is tests/postgres/test_timeouts.py (a TCP proxy)")
    app = make_app(tmp_path, ready_timeout=0.3)
    client = app.test_client()
    app.extensions["authz"].store.engine.dispose()  # the lock needs the file to itself
    locker = sqlite3.connect(tmp_path / "authz.db", timeout=5, isolation_level=None)
    try:
        locker.execute("PRAGMA locking_mode=EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        locker.execute("UPDATE policy_revision SET revision = revision")
        started = time.monotonic()
        responses = [client.get("/readyz") for _ in range(3)]
        elapsed = time.monotonic() - started
        assert elapsed < 3 * 0.3 + 1.0
        for response in responses:
            assert response.status_code == 503
            body = response.json
            assert body is not None and body["database"] == "no answer within 0.3 s"
            assert body["database_revision"] is None
        probes = [t for t in threading.enumerate() if t.name == "authz-ready-probe"]
        assert len(probes) == 1
        # Decisions never touch the database: the site keeps answering meanwhile.
        assert client.get("/healthz").status_code == 200
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            break
        time.sleep(0.2)
    assert client.get("/readyz").status_code == 200
    dispose(app)


# -- /metrics -----------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def scrape(client: FlaskClient) -> dict[str, float]:
    """GET /metrics; return each sample by ``name{labels}``."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.status_code
    assert response.mimetype == "text/plain"
    samples = {}
    for line in response.get_data(as_text=True).splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples[match[1] + (match[2] or "")] = float(match[3])
    return samples


def decisions(source: str, outcome: str) -> str:
    return f'authz_decisions_total{{outcome="{outcome}",source="{source}"}}'


@pytest.fixture
def admin(app: Flask) -> FlaskClient:
    client = app.test_client()
    assert AuthActions(client).login(ADMIN, ADMIN_PASSWORD).status_code == 302
    return client


def test_metrics_are_for_admins_only(app: Flask, client: FlaskClient, admin: FlaskClient) -> None:
    assert client.get("/metrics").status_code == 302
    assert client.get("/metrics", headers={"Accept": "application/json"}).status_code == 401
    AuthActions(client).login(USER, USER_PASSWORD)
    assert client.get("/metrics").status_code == 403
    assert scrape(admin)


def test_metrics_count_decisions_by_outcome_and_source(
    client: FlaskClient, admin: FlaskClient
) -> None:
    token = admin.get("/api/v1/csrf").json["csrf_token"]  # type: ignore[index]
    before = scrape(admin)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    assert client.get("/admin/").status_code == 302  # denied: anonymous
    assert client.get("/a%2Fb").status_code == 400  # refused before any decision
    response = admin.post(
        "/api/v1/decisions/batch",
        json={
            "requests": [
                {"subject": "anonymous", "path": "/healthz", "method": "GET"},
                {"subject": "anonymous", "path": "/admin/", "method": "GET"},
                {"subject": "anonymous", "path": "/metrics", "method": "GET"},
            ]
        },
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 200
    after = scrape(admin)

    def grew(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    # +3 healthz, +1 batch call, +1 the second scrape itself (decided before it renders).
    assert grew(decisions("middleware", "allow")) == 5
    assert grew(decisions("middleware", "deny")) == 2
    assert grew(decisions("api", "allow")) == 1
    assert grew(decisions("api", "deny")) == 2
    count = 'authz_decision_seconds_count{source="middleware"}'
    assert grew(count) == 7
    assert after['authz_decision_seconds_bucket{le="+Inf",source="middleware"}'] == after[count]
    assert after['authz_decision_seconds_sum{source="middleware"}'] > 0


def test_metrics_count_503s_as_errors(app: Flask, admin: FlaskClient) -> None:
    before = scrape(admin)
    other = app.test_client()
    raw_insert(app, "p", "user", "/zzz", "GET ", "deny")
    app.extensions["authz"].load()
    assert other.get("/healthz").status_code == 503
    app.extensions["authz"].load()  # still refused
    with app.extensions["authz"].store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM casbin_rule WHERE v1 = '/zzz'"))
    app.extensions["authz"].load()
    after = scrape(admin)
    assert after[decisions("middleware", "error")] - before[decisions("middleware", "error")] == 1
    loads = 'authz_policy_loads_total{outcome="ok"}'
    assert after[loads] - before[loads] == 3
    assert after["authz_policy_load_seconds_count"] >= after[loads]


def test_metrics_show_the_policy_state(app: Flask, admin: FlaskClient) -> None:
    raw_insert(app, "p", "user", "/probe", "GET", "allow", "x")
    app.extensions["authz"].load()
    samples = scrape(admin)
    engine = app.extensions["authz"]
    assert samples["authz_policy_revision"] == engine.revision
    assert samples["authz_policy_rules"] == len(engine.rules())
    assert samples["authz_policy_bad_rows"] == 1
    assert samples["authz_policy_refused"] == 0
    assert samples["authz_policy_lag_seconds"] == 0  # no poll in these tests


def test_metrics_count_logins(app: Flask, admin: FlaskClient) -> None:
    with app.app_context():
        users.create("slow@example.com", "slow-password-1", actor="t", source="cli")
    before = scrape(admin)
    client = app.test_client()
    auth = AuthActions(client)
    statuses = [auth.login("slow@example.com", "wrong-password-1").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    assert auth.login(USER, USER_PASSWORD).status_code == 302
    after = scrape(admin)
    for outcome, grew in (("failure", 5), ("throttled", 1), ("success", 1)):
        name = f'authz_logins_total{{outcome="{outcome}"}}'
        assert after[name] - before[name] == grew, outcome
    # The same attempts as authentication events, by kind.
    for kind, grew in (("login_failure", 5), ("login_throttled", 1), ("login_success", 1)):
        name = f'authz_auth_events_total{{kind="{kind}"}}'
        assert after[name] - before.get(name, 0) == grew, kind
