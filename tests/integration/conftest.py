"""Every integration test runs once per database backend (see ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

import service
from tests.conftest import Backend
from tests.conftest import dispose


@pytest.fixture(autouse=True)
def _on_each_backend(database: Backend) -> Backend:
    return database


@pytest.fixture(autouse=True)
def _apps_made_inside_commands_are_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close the apps the ``authz`` script builds for itself during a test.

    Their pooled connections would otherwise outlive the test's database (and psycopg
    warns when it finds one open at garbage collection).
    """
    made: list[Flask] = []
    real = service.create_app

    def tracked(*args: Any, **kwargs: Any) -> Flask:
        app = real(*args, **kwargs)
        made.append(app)
        return app

    monkeypatch.setattr(service, "create_app", tracked)
    yield
    for app in made:
        dispose(app)
