"""Shared fixtures: an app on a test database, its client, CLI runner and auth actions.

Every app-backed test runs once per database backend: SQLite (a file in the test's
folder) and PostgreSQL (a schema of its own per test) on the server named by
``AUTHZ_TEST_POSTGRES_URL`` (default: the local ``test`` database). When that server
cannot be reached, the PostgreSQL runs are skipped, saying where they looked and why.

``make_app`` (and so the ``app`` fixture) gives each test an initialised database: the
migrations, the default policy, an admin and a plain user. That database is initialised
once per run, backend and settings, by the ``db init`` steps a deployment runs, and each
test gets a copy of it: the SQLite file's bytes, or the PostgreSQL schema as ``pg_dump``
wrote it (a spare schema of an earlier test, checked and refilled, when there is one).
A copy costs milliseconds where an install costs a few hundred. A test marked
``fresh_install`` gets a database initialised for it alone.

Under pytest-xdist (``addopts``), each worker has a PostgreSQL database of its own.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
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
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    return name


def drop_schemas(url: str, names: list[str]) -> None:
    """Drop the schemas and everything in them."""
    if not names:
        return
    with admin_engine(url).begin() as conn:
        # A connection a failed test left inside a transaction must not hang the run.
        conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
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

    def holds(self, folder: Path) -> bool:
        """Whether ``folder`` has a database already."""
        return (folder / "authz.db").exists()

    def image(self, folder: Path) -> Image | None:
        """A copy of the database of ``folder`` (no connection may be open on it)."""
        path = folder / "authz.db"
        # Fold the write-ahead log into the file, so the file alone is the database.
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        return Image(path.read_bytes())

    def restore(self, image: Image, folder: Path) -> None:
        """Give ``folder`` a database equal to ``image`` (it must have none yet)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "authz.db").write_bytes(image.data)

    def discard(self, folder: Path) -> None:
        """Forget the database of ``folder`` (its files go with the folder)."""


class PostgresBackend(Backend):
    """One schema per folder on the PostgreSQL server under test.

    A schema copied from an image is not dropped after its test: it is kept as a spare,
    and the next copy of that image resets it (after checking its tables, columns,
    constraints and indexes are still the image's) by emptying its tables and inserting
    the image's rows and sequence values again, in one transaction. That is a fraction
    of the cost of creating the tables anew; a spare that changed shape is dropped.
    """

    name = "postgresql"

    def __init__(self, server: str) -> None:
        self.server = server
        self.schemas: dict[Path, str] = {}
        #: The image each copied folder's schema came from (gone once destroyed).
        self.copied: dict[Path, Image] = {}
        #: Schemas of past tests, by the image they came from, ready to be reset.
        self.spares: dict[int, list[str]] = {}
        #: What a schema copied from each image looks like, and its tables.
        self.shapes: dict[int, tuple[str, list[str]]] = {}

    def url(self, folder: Path) -> str:
        if folder not in self.schemas:
            self.schemas[folder] = create_schema(self.server)
        return schema_url(self.server, self.schemas[folder])

    def destroy(self, folder: Path) -> None:
        self.copied.pop(folder, None)
        drop_schemas(self.server, [self.schemas[folder]])

    def mark(self) -> int:
        return len(self.schemas)

    def release(self, mark: int = 0) -> None:
        made = list(self.schemas)[mark:]
        dropped = []
        for folder in made:
            name = self.schemas.pop(folder)
            image = self.copied.pop(folder, None)
            if image is None:
                dropped.append(name)
            else:
                self.spares.setdefault(id(image), []).append(name)
        drop_schemas(self.server, dropped)

    def close(self) -> None:
        """Drop every schema, the spares included."""
        self.release()
        drop_schemas(self.server, [name for names in self.spares.values() for name in names])
        self.spares.clear()

    def holds(self, folder: Path) -> bool:
        return folder in self.schemas

    def image(self, folder: Path) -> Image | None:
        """The schema of ``folder`` as SQL (``pg_dump``); None when pg_dump cannot make it."""
        schema = self.schemas[folder]
        whole = self._dump(schema)
        rows = self._dump(schema, "--data-only")
        if whole is None or rows is None or f"CREATE SCHEMA {schema};" not in whole:
            return None  # e.g. no pg_dump here, or one older than the server
        # The random schema name stands for whichever schema the image is replayed into.
        return Image(
            whole.replace(schema, _PLACEHOLDER).encode(), rows.replace(schema, _PLACEHOLDER)
        )

    def _dump(self, schema: str, *options: str) -> str | None:
        """The SQL ``pg_dump`` writes for ``schema``, comments and meta-commands left out."""
        libpq = make_url(self.server).set(drivername="postgresql")
        command = ["pg_dump", "--schema", schema, "--inserts", "--no-owner", "--no-privileges"]
        command += [*options, "--dbname", libpq.render_as_string(hide_password=False)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        # Only SQL: psql's meta-commands (pg_dump 15.14+ writes \restrict) and comments go.
        lines = done.stdout.splitlines()
        return "\n".join(line for line in lines if not line.startswith(("\\", "--")))

    def restore(self, image: Image, folder: Path) -> None:
        spares = self.spares.get(id(image), [])
        while spares:
            name = spares.pop()
            if self._reset(image, name):
                break
            drop_schemas(self.server, [name])
        else:
            name = f"authz_test_{secrets.token_hex(8)}"
            self._run(image.data.decode().replace(_PLACEHOLDER, name))
            if id(image) not in self.shapes:
                self.shapes[id(image)] = (self._shape(name), self._tables(name))
        self.schemas[folder] = name
        self.copied[folder] = image

    def _reset(self, image: Image, name: str) -> bool:
        """Give the spare schema ``name`` the image's rows again; False if it changed shape."""
        shape, tables = self.shapes[id(image)]
        if self._shape(name) != shape:
            return False
        # DELETE, not TRUNCATE: for a few dozen rows, TRUNCATE's new files cost far more.
        # (A foreign key the order breaks fails the reset: the spare is dropped instead.)
        # Names from our own catalog query, not from input.
        emptied = "".join(f"DELETE FROM {name}.{table};\n" for table in tables)  # noqa: S608
        # A connection a failed test left inside a transaction must not hang the run.
        script = f"SET LOCAL lock_timeout = '5s';\n{emptied}{image.rows}"
        try:
            self._run(script.replace(_PLACEHOLDER, name))
        except (SQLAlchemyError, psycopg.Error):
            return False
        return True

    def _run(self, script: str) -> None:
        """Run a script of many statements in one round trip and one transaction."""
        with admin_engine(self.server).connect() as conn:
            # A test database need not survive a crash: the commit skips the disk wait.
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            raw = conn.connection.driver_connection
            assert raw is not None
            # Without parameters, psycopg sends the text as one simple query.
            raw.execute(script.encode())
            conn.exec_driver_sql("RESET ALL")  # the dump's SETs must not outlive it
            conn.commit()

    def _shape(self, name: str) -> str:
        """A digest of the tables, columns, constraints, indexes and triggers of ``name``."""
        with admin_engine(self.server).connect() as conn:
            digest = conn.execute(sa.text(_SHAPE), {"schema": name}).scalar_one()
        return str(digest)

    def _tables(self, name: str) -> list[str]:
        """The tables of schema ``name``."""
        with admin_engine(self.server).connect() as conn:
            query = sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :schema")
            return sorted(conn.execute(query, {"schema": name}).scalars())


#: One text per column, constraint, index, trigger and function of a schema, the schema's
#: own name left out; two schemas with the same digest have the same shape.
_SHAPE = """
SELECT md5(replace(coalesce(string_agg(item, ';' ORDER BY item), ''), :schema, ''))
FROM (
    SELECT concat_ws(
        ':', c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod),
        a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
    ) AS item
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE n.nspname = :schema
    UNION ALL
    SELECT concat_ws(':', conrelid::regclass, conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = CAST(:schema AS regnamespace)
    UNION ALL
    SELECT pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relnamespace = CAST(:schema AS regnamespace)
    UNION ALL
    SELECT concat_ws(':', t.tgname, t.tgrelid::regclass)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = CAST(:schema AS regnamespace) AND NOT t.tgisinternal
    UNION ALL
    SELECT concat_ws(':', p.proname, pg_get_function_identity_arguments(p.oid))
    FROM pg_proc p WHERE p.pronamespace = CAST(:schema AS regnamespace)
) AS items
"""


#: Stands for the schema name inside a PostgreSQL image.
_PLACEHOLDER = "authz_image_schema"


class Image:
    """A prepared database, as its backend copies it: SQLite file bytes, or SQL."""

    def __init__(self, data: bytes, rows: str = "") -> None:
        #: The database: SQLite's file, or the SQL that makes the schema (rows included).
        self.data = data
        #: PostgreSQL: the SQL that inserts the rows and sets the sequences, alone.
        self.rows = rows


#: The backend of the running test; None outside app-backed tests (SQLite then).
_current: Backend | None = None
#: The SQLite backend of code outside app-backed tests.
_sqlite = Backend()
#: Prepared databases by backend and settings; None: this one cannot be copied.
_images: dict[tuple[str, str], Image | None] = {}
#: Whether the running test is marked ``fresh_install``.
_fresh_only = False


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Accept pytest-xdist's options of ``addopts`` when it is off (``-p no:xdist``)."""
    if pluginmanager.has_plugin("xdist"):
        return
    group = parser.getgroup("xdist", "pytest-xdist is off: its options are ignored")
    group.addoption("--numprocesses", dest="numprocesses", default=None)
    group.addoption("--dist", dest="dist", default="no")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The PostgreSQL server URL, once it answered a query; otherwise the test is skipped.

    Under pytest-xdist each worker gets a database of its own on that server, made for
    the run and dropped after it: a NOTIFY on one worker's database reaches no other.
    A user without the right to create databases shares the one named (each test still
    has its own schema there).
    """
    url = postgres_url()
    reason = postgres_unreachable(url)
    if reason is not None:
        pytest.skip(reason)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    server = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    own = None
    if worker is not None:
        run = re.sub(r"\W", "", os.environ.get("PYTEST_XDIST_TESTRUNUID", ""))[:8]
        name = f"{make_url(url).database}_{worker}_{run}"
        try:
            with server.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            own = make_url(url).set(database=name).render_as_string(hide_password=False)
        except SQLAlchemyError:
            own = None
    try:
        yield own or url
    finally:
        admin_engine(own or url).dispose()
        if own is not None:
            with server.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()


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
        chosen.close()  # anything a module-wide fixture made, and the spare schemas


@pytest.fixture(autouse=True)
def _fresh_install_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked ``fresh_install``: ``make_app`` initialises their database itself."""
    global _fresh_only
    _fresh_only = request.node.get_closest_marker("fresh_install") is not None
    try:
        yield
    finally:
        _fresh_only = False


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
    chosen = backend or _current or _sqlite
    return {
        "env": "testing",
        "instance_path": str(tmp_path / "instance"),
        "database_url": chosen.url(tmp_path) if "database_url" not in overrides else "",
        "secret_key": "test-secret-key",
        "poll_interval": 0,
        # The shipped policy tests would refuse the many edits tests make to the default
        # policy; tests of policy tests store their own (tests/*/test_policy_tests*.py).
        "default_tests": "",
        **FAST_HASHING,
        **overrides,
    }


def make_app(tmp_path: Path, *, backend: Backend | None = None, **overrides: Any) -> Flask:
    """Create an initialised app with an admin and a plain user.

    The database is a copy of one initialised earlier in the run with the same backend
    and settings (see the module's docstring); it is initialised here when the test is
    marked ``fresh_install``, when ``tmp_path`` has a database already, or when a setting
    cannot be told apart from another by its value.
    """
    chosen = backend or _current or _sqlite
    key = _settings_key(overrides)
    if _fresh_only or key is None or chosen.holds(tmp_path):
        return _initialised_app(tmp_path, chosen, overrides)
    image_key = (_backend_key(chosen), key)
    if image_key not in _images:
        _images[image_key] = _prepare_image(chosen, overrides)
    image = _images[image_key]
    if image is None:
        return _initialised_app(tmp_path, chosen, overrides)
    chosen.restore(image, tmp_path)
    return create_app(app_config(tmp_path, backend=chosen, **overrides))


def _initialised_app(tmp_path: Path, backend: Backend, overrides: dict[str, Any]) -> Flask:
    """Create the app, run ``db init`` with the admin and add the plain user, as before."""
    app = create_app(app_config(tmp_path, backend=backend, **overrides))
    with app.app_context():
        init_database(admin_email=ADMIN, admin_password=ADMIN_PASSWORD, actor="test")
        users.create(USER, USER_PASSWORD, actor="test", source="cli")
    return app


def _prepare_image(backend: Backend, overrides: dict[str, Any]) -> Image | None:
    """Initialise a database in a scratch folder and copy it; the scratch goes after."""
    scratch = Path(tempfile.mkdtemp(prefix="authz-image-"))
    try:
        app = _initialised_app(scratch, backend, overrides)
        dispose(app)
        try:
            return backend.image(scratch)
        finally:
            backend.discard(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


#: Types whose value says all a setting does (anything else: no shared image).
_PLAIN = (str, int, float, bool, type(None), Path)


def _settings_key(overrides: dict[str, Any]) -> str | None:
    """What decides the initialised database's content besides the backend, as text.

    The settings given, every ``AUTHZ_*`` variable and the working directory (its
    ``.env`` is read); None when a setting is not a plain value, or names the database.
    """
    if "database_url" in overrides:
        return None
    if not all(isinstance(value, _PLAIN) for value in overrides.values()):
        return None
    environment = sorted((k, v) for k, v in os.environ.items() if k.startswith("AUTHZ_"))
    return repr((sorted(overrides.items()), environment, os.getcwd()))


def _backend_key(backend: Backend) -> str:
    """Which server a backend's images belong to."""
    return f"{backend.name}:{getattr(backend, 'server', '')}"


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


@pytest.fixture
def write_in_between(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """Arm a write to run once, right after a large change's rows are staged and before its
    lock: the moment another admin's small write can commit (the staged write then rebases)."""
    from authz import store as store_module

    def arm(write: Callable[[], None]) -> None:
        real = store_module.Staging.fill
        done: list[bool] = []

        def fill(self: store_module.Staging, add: Any, remove_ids: Any) -> None:
            real(self, add, remove_ids)
            if not done:
                done.append(True)
                write()

        monkeypatch.setattr(store_module.Staging, "fill", fill)

    return arm


def store_tests(app: Flask, *items: Any, force: bool = False) -> None:
    """Store policy tests (authz.expectations.Expectation) as the command line would."""
    from service import editing
    from service import policy_tests

    with app.app_context():
        policy_tests.load(items, editing.Who("test", "cli"), force=force)


def stored_tests(app: Flask) -> list[Any]:
    """The stored policy tests that read, in the order they were added."""
    from service import policy_tests

    with app.app_context():
        return policy_tests.stored()
