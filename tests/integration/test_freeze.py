"""No request and no row can freeze a worker: the attacks from the report, on a live server.

The server runs threaded in this process, as one gunicorn worker with threads would: a
decision that held the interpreter would stall every other request with it.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.serving import make_server

from service.extensions import db
from tests.conftest import dispose
from tests.conftest import make_app


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    """The app, with the report's rows put in the table by hand, served on a free port."""
    app = make_app(tmp_path)
    with app.app_context(), db.engine.begin() as conn:
        for values in [
            ("anonymous", "/redos", "(A+)+$", "allow"),
            ("anonymous", "/*/*/*/*/*/*/*/*/*/*/x", "GET", "allow"),
        ]:
            conn.execute(
                sa.text(
                    "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) VALUES ('p', :a, :b, :c, :d)"
                ),
                dict(zip("abcd", values, strict=True)),
            )
    app.extensions["authz"].load()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    dispose(app)


def status(url: str, method: str = "GET") -> int:
    """The status of one request, redirects not followed."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        connection.request(method, parts.path or "/")
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_report_attacks_are_answered_and_login_is_served_meanwhile(
    live: tuple[Flask, str],
) -> None:
    """The 28-character method and the 40-segment path are answered at once, and an
    unrelated GET /login sent alongside them is served (no decision holds the worker)."""
    app, base = live
    assert {b.rule.values[1] for b in app.extensions["authz"].bad_rows} == {
        "/redos",
        "/*/*/*/*/*/*/*/*/*/*/x",
    }
    results: dict[str, int] = {}

    def attack(name: str, url: str, method: str) -> None:
        results[name] = status(url, method)

    attacks = [
        threading.Thread(target=attack, args=("method", base + "/redos", "A" * 27 + "!")),
        threading.Thread(target=attack, args=("path", base + "/a" * 40, "GET")),
        threading.Thread(target=attack, args=("segments", base + "/a" * 70, "GET")),
    ]
    for thread in attacks:
        thread.start()
    results["login"] = status(base + "/login")
    for thread in attacks:
        thread.join(30)
        assert not thread.is_alive(), "an attack request hung"
    assert results == {"method": 400, "path": 302, "segments": 414, "login": 200}
