"""Log lines: one per event, with time, level, pid, request id and client; text or JSON."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from service import users
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import USER
from tests.conftest import AuthActions
from tests.conftest import dispose
from tests.conftest import make_app

PROXY = "10.0.0.5"
#: TIME LEVEL pid=PID req=ID client=ADDR LOGGER: message
LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ([A-Z]+) pid=(\d+) req=(\S+) client=(\S+) "
    r"([\w.]+): (.*)$"
)


def lines(err: str) -> list[re.Match[str]]:
    """The service's log lines in captured standard error, each parsed."""
    parsed = [LINE.match(line) for line in err.splitlines()]
    return [m for m in parsed if m is not None]


@pytest.fixture
def admin(app: Flask) -> FlaskClient:
    client = app.test_client()
    AuthActions(client).login(ADMIN, ADMIN_PASSWORD)
    return client


def add_rule(app: Flask, client: FlaskClient, path: str, **kwargs: object) -> object:
    token = client.get("/api/v1/csrf").json["csrf_token"]  # type: ignore[index]
    body = {"subject": "user", "path": path, "methods": "GET"}
    body["revision"] = app.extensions["authz"].revision
    return client.post("/api/v1/policy/rules", json=body, headers={"X-CSRFToken": token}, **kwargs)


def test_a_policy_change_is_one_line_naming_who_what_and_revision(
    app: Flask, admin: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = add_rule(app, admin, "/reports", environ_base={"REMOTE_ADDR": "198.51.100.4"})
    assert response.status_code == 201  # type: ignore[attr-defined]
    rid = response.headers["X-Request-ID"]  # type: ignore[attr-defined]
    (line,) = [m for m in lines(capsys.readouterr().err) if m[6] == "authz"]
    time_, level, pid, req, client, _logger, message = line.groups()
    assert level == "INFO" and int(pid) == os.getpid()
    assert req == rid and client == "198.51.100.4"
    revision = app.extensions["authz"].revision
    assert message == f"rule.add by {ADMIN} (api): policy revision {revision}, +1 -0 rows"


def test_an_account_change_is_logged(
    app: Flask, admin: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deactivating an account changes no policy row, and is still one line."""
    capsys.readouterr()
    with app.app_context():
        users.set_active(USER, False, actor=ADMIN, source="cli")
    messages = [m[7] for m in lines(capsys.readouterr().err) if m[6] == "authz"]
    assert len(messages) == 1
    assert messages[0].startswith(f"user.deactivate by {ADMIN} (cli): policy revision ")
    assert USER in messages[0]


def test_request_ids(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{16}", first) and first != second
    # Anyone but a trusted proxy naming the id is ignored: it could forge correlation.
    forged = client.get("/healthz", headers={"X-Request-ID": "chosen-by-attacker"})
    assert forged.headers["X-Request-ID"] != "chosen-by-attacker"
    # Error answers carry it too.
    assert client.get("/no/such/page").headers["X-Request-ID"]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path, trusted_proxies=PROXY)
    yield app
    dispose(app)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123.x", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("two words", False),
        ("line\nbreak", False),
        ("", False),
    ],
)
def test_a_trusted_proxys_request_id_is_kept_when_sane(
    proxied: Flask, sent: str, kept: bool
) -> None:
    environ = {"REMOTE_ADDR": PROXY, "HTTP_X_REQUEST_ID": sent}
    echoed = proxied.test_client().get("/healthz", environ_base=environ).headers["X-Request-ID"]
    assert (echoed == sent) is kept
    assert re.fullmatch(r"[A-Za-z0-9._:@/+=-]{1,128}", echoed)


def test_a_503_is_one_line(
    app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    with app.extensions["authz"].store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) "
                "VALUES ('p', 'user', '/', 'GET ', 'deny')"
            )
        )
    app.extensions["authz"].load()
    capsys.readouterr()
    response = client.get("/login")
    assert response.status_code == 503
    rid = response.headers["X-Request-ID"]
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    (line,) = lines(err)
    assert line[2] == "ERROR" and line[4] == rid
    assert line[7].startswith("503 for GET /login: cannot decide: the stored policy is refused")


def test_a_database_error_is_one_line(
    app: Flask, admin: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLAlchemy's three-line message (SQL, background link) is folded to one line."""
    with app.extensions["authz"].store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit_log"))
    capsys.readouterr()
    response = admin.get("/admin/audit")
    assert response.status_code == 503
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    # SQLite: "no such table: audit_log"; PostgreSQL: 'relation "audit_log" does not exist'.
    assert "audit_log" in err and "[SQL:" not in err


def test_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app(tmp_path, log_format="json")
    try:
        capsys.readouterr()
        client = app.test_client()
        AuthActions(client).login(ADMIN, ADMIN_PASSWORD)
        response = add_rule(app, client, "/reports")
        docs = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        change = [d for d in docs if d["logger"] == "authz"]
        assert len(change) == 1
        assert set(change[0]) == {
            "time",
            "level",
            "pid",
            "request_id",
            "client",
            "logger",
            "message",
        }
        assert change[0]["request_id"] == response.headers["X-Request-ID"]  # type: ignore[attr-defined]
        assert change[0]["level"] == "INFO" and change[0]["pid"] == os.getpid()
    finally:
        dispose(app)


def test_caplog_still_sees_the_lines(
    app: Flask, admin: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="authz"):
        add_rule(app, admin, "/reports")
    assert any(r.name == "authz" and "rule.add" in r.getMessage() for r in caplog.records)


def test_the_cli_prints_only_its_own_result(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        args=["roles", "add", USER, "admin"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
