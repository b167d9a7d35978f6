"""Two instances of the app on one database: a change reaches the other as that change.

Runs once per backend (SQLite and PostgreSQL, ``tests/integration/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
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
