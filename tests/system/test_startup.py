"""First start: a database with no tables yet is expected, not alarming; threads stop."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service import create_app
from service import stop_background
from tests.conftest import app_config


def test_a_new_database_is_reported_at_info_not_as_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service")
    app = create_app(app_config(tmp_path))
    try:
        records = [r for r in caplog.records if r.name == "service"]
        assert [(r.levelno, r.getMessage()) for r in records] == [
            (logging.INFO, "database not initialised; run `authz db init`")
        ]
    finally:
        stop_background(app)


def test_a_database_that_cannot_be_opened_is_still_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'authz.db'}"
    app = create_app(app_config(tmp_path, database_url=url))
    try:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "policy not loaded" in warnings[0].getMessage()
        assert "unable to open database file" in warnings[0].getMessage()
    finally:
        stop_background(app)


def test_stop_background_ends_the_poller_thread(tmp_path: Path) -> None:
    app = create_app(app_config(tmp_path, poll_interval=0.05))
    poller = app.extensions["authz.poller"]
    thread = poller._thread
    assert thread is not None and thread.is_alive()
    stop_background(app)
    assert not thread.is_alive()
