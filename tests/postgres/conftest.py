"""Fixtures for the PostgreSQL tests: one fresh schema per test on the server under test.

The server is named by ``AUTHZ_TEST_POSTGRES_URL`` (default: the local ``test`` database).
When it cannot be reached the tests are skipped, saying where they looked and why.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from authz import csvio
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.model import PolicyModel
from authz.rules import Rule
from authz.store import PolicyStore

#: The repository root, found from this file so the tests run from any directory.
REPO = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Seconds to wait for a connection before calling the server unreachable.
CONNECT_TIMEOUT = 5

EngineFactory = Callable[[], sa.Engine]


def postgres_url() -> str:
    """The URL of the PostgreSQL server under test."""
    return os.environ.get("AUTHZ_TEST_POSTGRES_URL", DEFAULT_URL)


def shown(url: str) -> str:
    """The URL with any password masked, fit for a skip reason."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given; it has no parsed password
        return url


@dataclass(frozen=True)
class DbState:
    """What a write may change: the stored revision, the rule rows, the number of audit entries."""

    revision: int
    #: every stored row in storage order, duplicates kept (so a doubled row shows).
    rules: tuple[Rule, ...]
    audit_count: int


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The server URL, once it answered a query; otherwise the test is skipped."""
    url = postgres_url()
    probe = sa.create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT}
    )
    try:
        with probe.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        pytest.skip(f"PostgreSQL not reachable at {shown(url)}: {reason}")
    finally:
        probe.dispose()
    return url


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh, empty schema with a random name; dropped with everything in it afterwards."""
    name = f"authz_test_{secrets.token_hex(8)}"
    admin = sa.create_engine(
        pg_url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT}
    )
    quoted = admin.dialect.identifier_preparer.quote_identifier(name)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {quoted}")
    try:
        yield name
    finally:
        with admin.begin() as conn:
            # A connection a failed test left inside a transaction must not hang the run.
            conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
        admin.dispose()


@pytest.fixture
def pg_engine_factory(pg_url: str, pg_schema: str) -> Iterator[EngineFactory]:
    """Make SQLAlchemy engines confined to the test's schema (one per simulated instance)."""
    made: list[sa.Engine] = []

    def make() -> sa.Engine:
        engine = sa.create_engine(
            pg_url,
            connect_args={
                "options": f"-csearch_path={pg_schema}",
                "connect_timeout": CONNECT_TIMEOUT,
            },
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture
def pg_engine(pg_engine_factory: EngineFactory) -> sa.Engine:
    """The SQLAlchemy engine of the test's schema; disposed before the schema is dropped."""
    return pg_engine_factory()


@pytest.fixture
def store(pg_engine: sa.Engine) -> PolicyStore:
    """A PolicyStore on PostgreSQL, schema created."""
    policy_store = PolicyStore(pg_engine)
    policy_store.create_schema()
    return policy_store


@pytest.fixture
def model() -> PolicyModel:
    """The model.conf that ships with the repository."""
    return PolicyModel.from_file(REPO / "model.conf")


@pytest.fixture
def default_rules(model: PolicyModel) -> tuple[Rule, ...]:
    """The rows of policies/default.csv, validated and normalized."""
    return csvio.read_file(REPO / "policies" / "default.csv", model).rules


@pytest.fixture
def engine(model: PolicyModel, store: PolicyStore, default_rules: tuple[Rule, ...]) -> PolicyEngine:
    """A loaded PolicyEngine holding the default policy (revision 1, one audit entry)."""
    policy_engine = PolicyEngine(model, store)
    policy_engine.load()
    policy_engine.apply(Change(add=default_rules), actor="test", source="cli")
    return policy_engine


@pytest.fixture
def other_engine(
    model: PolicyModel, engine: PolicyEngine, pg_engine_factory: EngineFactory
) -> PolicyEngine:
    """A second instance: its own connection pool on the same schema, loaded after ``engine``."""
    second = PolicyEngine(model, PolicyStore(pg_engine_factory()))
    second.load()
    return second


@pytest.fixture
def db_state(store: PolicyStore) -> Callable[[], DbState]:
    """Return a function reading the revision, rule rows and audit count from the database."""

    def read() -> DbState:
        revision, rules = store.load()
        with store.engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one()
        return DbState(revision, tuple(rules), count)

    return read
