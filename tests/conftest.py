"""Shared fixtures: an app on a temporary SQLite file, its client, CLI runner and auth actions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner
from werkzeug.test import TestResponse

from service import create_app
from service import users
from service.bootstrap import init_database
from service.extensions import db

ADMIN = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"
USER = "user@example.com"
USER_PASSWORD = "user-password-1"

#: argon2 at its cheapest, so tests spend their time on behaviour, not hashing.
FAST_HASHING = {"argon2_time_cost": 1, "argon2_memory_cost": 8, "argon2_parallelism": 1}


def app_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Settings for a test app on a SQLite file in ``tmp_path``."""
    return {
        "env": "testing",
        "instance_path": str(tmp_path / "instance"),
        "database_url": f"sqlite:///{tmp_path / 'authz.db'}",
        "secret_key": "test-secret-key",
        "poll_interval": 0,
        **FAST_HASHING,
        **overrides,
    }


def make_app(tmp_path: Path, **overrides: Any) -> Flask:
    """Create an initialised app with an admin and a plain user."""
    app = create_app(app_config(tmp_path, **overrides))
    with app.app_context():
        init_database(admin_email=ADMIN, admin_password=ADMIN_PASSWORD, actor="test")
        users.create(USER, USER_PASSWORD, actor="test", source="cli")
    return app


def dispose(app: Flask) -> None:
    """Stop the app's revision poller and close its database connections."""
    for name in ("authz.poller", "authz.listener"):
        worker = app.extensions.get(name)
        if worker is not None:
            worker.stop()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    dispose(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """Return the CSRF token of the form on ``path``."""
    response = client.get(path)
    match = _CSRF.search(response.get_data(as_text=True))
    assert match, f"no CSRF token on {path} ({response.status_code})"
    return match.group(1)


class AuthActions:
    """Log in and out through the real forms (flaskr's AuthActions)."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def login(
        self, email: str = USER, password: str = USER_PASSWORD, next: str = ""
    ) -> TestResponse:
        token = csrf_token(self.client, "/login")
        data = {"email": email, "password": password, "csrf_token": token}
        if next:
            data["next"] = next
        return self.client.post("/login", data=data)

    def logout(self) -> TestResponse:
        token = csrf_token(self.client, "/logout")
        return self.client.post("/logout", data={"csrf_token": token})

    def register(self, email: str, password: str, confirm: str | None = None) -> TestResponse:
        token = csrf_token(self.client, "/register")
        return self.client.post(
            "/register",
            data={
                "email": email,
                "password": password,
                "confirm": password if confirm is None else confirm,
                "csrf_token": token,
            },
        )


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    return AuthActions(client)
