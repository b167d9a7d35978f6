"""Shared fixtures: an app on a test database, its client, CLI runner and auth actions.

Every app-backed test runs once per database backend: SQLite (a file in the test's
folder) and PostgreSQL (a fresh schema per test, dropped afterwards) on the server named
by ``AUTHZ_TEST_POSTGRES_URL`` (default: the local ``test`` database). When that server
cannot be reached, the PostgreSQL runs are skipped, saying where they looked and why.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool
from werkzeug.test import TestResponse

from service import create_app
from service import stop_background
from service import users
from service.bootstrap import init_database

ADMIN = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"
USER = "user@example.com"
USER_PASSWORD = "user-password-1"

#: argon2 at its cheapest, so tests spend their time on behaviour, not hashing.
FAST_HASHING = {"argon2_time_cost": 1, "argon2_memory_cost": 8, "argon2_parallelism": 1}


DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Seconds to wait for a PostgreSQL connection before calling the server unreachable.
CONNECT_TIMEOUT = 5


def postgres_url() -> str:
    """The URL of the PostgreSQL server under test."""
    return os.environ.get("AUTHZ_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def shown(url: str) -> str:
    """The URL with any password masked, fit for a skip reason."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given; it has no parsed password
        return url


@functools.cache
def admin_engine(url: str) -> sa.Engine:
    """The engine that creates and drops schemas: one connection, kept for the session.

    A new PostgreSQL connection costs a server process; two per test add up.
    """
    return sa.create_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )


def postgres_unreachable(url: str) -> str | None:
    """Why the server at ``url`` cannot be used, or None when it answered a query."""
    probe = sa.create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT}
    )
    try:
        with probe.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        return f"PostgreSQL not reachable at {shown(url)}: {reason}"
    finally:
        probe.dispose()
    return None


def create_schema(url: str) -> str:
    """Create a fresh, empty schema with a random name on the server; return its name."""
    name = f"authz_test_{secrets.token_hex(8)}"
    with admin_engine(url).begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    return name


def drop_schemas(url: str, names: list[str]) -> None:
    """Drop the schemas and everything in them."""
    if not names:
        return
    with admin_engine(url).begin() as conn:
        # A connection a failed test left inside a transaction must not hang the run.
        conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
        for name in names:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def schema_url(url: str, schema: str) -> str:
    """``url`` with every connection confined to ``schema`` (its search_path)."""
    # A test database need not survive a crash: commits skip the wait for the disk.
    options = f"-csearch_path={schema} -csynchronous_commit=off"
    query = {"options": options, "connect_timeout": str(CONNECT_TIMEOUT)}
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


class Backend:
    """A database backend for app tests: hands out one database per folder.

    The same folder gets the same database (a second instance of the app, a restart);
    another folder a fresh, empty one (a database nobody initialised yet).
    """

    name = "sqlite"

    def url(self, folder: Path) -> str:
        """The database of ``folder`` (created empty on first use)."""
        return f"sqlite:///{folder / 'authz.db'}"

    def destroy(self, folder: Path) -> None:
        """Make the database of ``folder`` vanish, tables and all (a lost database)."""
        (folder / "authz.db").unlink()

    def mark(self) -> int:
        """A point to release back to: databases made after it are dropped."""
        return 0

    def release(self, mark: int = 0) -> None:
        """Drop the databases made since ``mark``."""


class PostgresBackend(Backend):
    """One schema per folder on the PostgreSQL server under test."""

    name = "postgresql"

    def __init__(self, server: str) -> None:
        self.server = server
        self.schemas: dict[Path, str] = {}

    def url(self, folder: Path) -> str:
        if folder not in self.schemas:
            self.schemas[folder] = create_schema(self.server)
        return schema_url(self.server, self.schemas[folder])

    def destroy(self, folder: Path) -> None:
        drop_schemas(self.server, [self.schemas[folder]])

    def mark(self) -> int:
        return len(self.schemas)

    def release(self, mark: int = 0) -> None:
        made = list(self.schemas)[mark:]
        drop_schemas(self.server, [self.schemas.pop(folder) for folder in made])


#: The backend of the running test; None outside app-backed tests (SQLite then).
_current: Backend | None = None


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The PostgreSQL server URL, once it answered a query; otherwise the test is skipped."""
    url = postgres_url()
    reason = postgres_unreachable(url)
    if reason is not None:
        pytest.skip(reason)
    yield url
    admin_engine(url).dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each database backend in turn, for the whole session (tests are grouped by it)."""
    if request.param == "sqlite":
        yield Backend()
        return
    chosen = PostgresBackend(request.getfixturevalue("pg_url"))
    try:
        yield chosen
    finally:
        chosen.release()  # anything a module-wide fixture made


@pytest.fixture
def database(backend: Backend) -> Iterator[Backend]:
    """The backend of this test; the databases the test made are dropped after it."""
    global _current
    _current, mark = backend, backend.mark()
    try:
        yield backend
    finally:
        _current = None
        backend.release(mark)


def app_config(
    tmp_path: Path, *, backend: Backend | None = None, **overrides: Any
) -> dict[str, Any]:
    """Settings for a test app on the database of ``tmp_path`` (in the test's backend)."""
    chosen = backend or _current or Backend()
    return {
        "env": "testing",
        "instance_path": str(tmp_path / "instance"),
        "database_url": chosen.url(tmp_path) if "database_url" not in overrides else "",
        "secret_key": "test-secret-key",
        "poll_interval": 0,
        **FAST_HASHING,
        **overrides,
    }


def make_app(tmp_path: Path, *, backend: Backend | None = None, **overrides: Any) -> Flask:
    """Create an initialised app with an admin and a plain user."""
    app = create_app(app_config(tmp_path, backend=backend, **overrides))
    with app.app_context():
        init_database(admin_email=ADMIN, admin_password=ADMIN_PASSWORD, actor="test")
        users.create(USER, USER_PASSWORD, actor="test", source="cli")
    return app


def dispose(app: Flask) -> None:
    """Stop the app's revision poller and close its database connections (as gunicorn's
    worker_exit hook does)."""
    stop_background(app)


@pytest.fixture
def app(tmp_path: Path, database: Backend) -> Iterator[Flask]:
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


def make_token(app: Flask, name: str = "ci", roles: Any = ("admin",), **options: Any) -> str:
    """Create a service token with ``roles`` (as the CLI would); return its secret."""
    from service import tokens

    with app.app_context():
        _token, secret = tokens.create(
            name, roles=list(roles), actor="test", source="test", **options
        )
    return secret


def bearer(secret: str) -> dict[str, str]:
    """The header that authenticates a request with a service token."""
    return {"Authorization": f"Bearer {secret}"}


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
