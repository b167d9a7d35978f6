"""Two instances of the app on one database: a change reaches the other as that change.

Runs once per backend (SQLite and PostgreSQL, ``tests/integration/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from authz import Change
from authz import Rule
from service import create_app
from service.config import ConfigError
from service.config import load_settings
from tests.conftest import ADMIN
from tests.conftest import ADMIN_PASSWORD
from tests.conftest import AuthActions
from tests.conftest import app_config
from tests.conftest import dispose
from tests.conftest import make_app
from tests.integration.test_health import scrape

NEW = Rule.of("p", "anonymous", "/new", "GET", "allow")


def test_a_change_reaches_another_instance_by_the_change_log(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    other = create_app(app_config(tmp_path))
    try:
        client = app.test_client()
        assert client.get("/new").status_code == 302  # to the login page: denied
        with other.app_context():
            other.extensions["authz"].apply(Change.adding(NEW), actor="other", source="cli")
        engine = app.extensions["authz"]
        assert engine.refresh() is True
        assert engine.refreshes == {"incremental": 1, "full": 0}
        assert client.get("/new").status_code == 404  # allowed: no such page
        ready = client.get("/readyz").json
        assert ready is not None
        assert ready["revision"] == ready["database_revision"] == engine.revision
        assert ready["lag_seconds"] == 0.0
        admin: FlaskClient = app.test_client()
        assert AuthActions(admin).login(ADMIN, ADMIN_PASSWORD).status_code == 302
        samples = scrape(admin)
        assert samples['authz_policy_refreshes_total{kind="incremental"}'] >= 1
        assert samples["authz_policy_revision"] == engine.revision
    finally:
        dispose(other)
        dispose(app)


def test_the_retention_setting_reaches_the_store(tmp_path: Path) -> None:
    app: Flask = create_app(app_config(tmp_path, change_log_days=2.5))
    try:
        store = app.extensions["authz"].store
        assert store.change_log_retention.total_seconds() == 2.5 * 86400
    finally:
        dispose(app)


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "36501", "soon"])
def test_a_wrong_retention_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="^AUTHZ_CHANGE_LOG_DAYS:"):
        load_settings({"AUTHZ_CHANGE_LOG_DAYS": value}, default_instance=tmp_path / "instance")


def test_a_worker_forked_late_catches_up_before_it_serves(tmp_path: Path) -> None:
    """gunicorn forks a replacement worker from the master, whose snapshot stopped at the
    first fork: the worker must not serve that old policy until its first poll."""
    from service import after_fork
    from service import before_fork

    app = make_app(tmp_path)
    other = create_app(app_config(tmp_path))
    try:
        before_fork(app)  # the master, when its first worker is forked
        with other.app_context():
            other.extensions["authz"].apply(Change.adding(NEW), actor="other", source="cli")
        engine = app.extensions["authz"]
        after_fork(app)  # a worker forked now, before its first request
        assert engine.revision == other.extensions["authz"].revision
        assert app.test_client().get("/new").status_code == 404  # allowed: no such page
    finally:
        dispose(other)
        dispose(app)


def test_a_worker_that_cannot_catch_up_serves_nothing(tmp_path: Path) -> None:
    from service import after_fork
    from service import before_fork

    app = make_app(tmp_path)
    try:
        before_fork(app)
        engine = app.extensions["authz"]

        def unreachable() -> tuple[int, int]:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

        engine.store.revisions = unreachable  # type: ignore[method-assign]
        engine.store.load_rows = unreachable  # type: ignore[method-assign,assignment]
        after_fork(app)
        assert not engine.loaded
        response = app.test_client().get("/login")
        assert response.status_code == 503
    finally:
        dispose(app)
