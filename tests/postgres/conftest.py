"""Fixtures for the PostgreSQL tests: one fresh schema per test on the server under test.

The server is named by ``AUTHZ_TEST_POSTGRES_URL`` (default: the local ``test`` database);
``pg_url`` (in ``tests/conftest.py``) skips the tests, saying where it looked and why, when
that server cannot be reached.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from authz import csvio
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.model import PolicyModel
from authz.rules import Rule
from authz.store import PolicyStore
from tests.conftest import CONNECT_TIMEOUT
from tests.conftest import create_schema
from tests.conftest import drop_schemas

#: The repository root, found from this file so the tests run from any directory.
REPO = Path(__file__).resolve().parents[2]

EngineFactory = Callable[[], sa.Engine]


@dataclass(frozen=True)
class DbState:
    """What a write may change: the stored revision, the rule rows, the number of audit entries."""

    revision: int
    #: every stored row in storage order, duplicates kept (so a doubled row shows).
    rules: tuple[Rule, ...]
    audit_count: int


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh, empty schema with a random name; dropped with everything in it afterwards."""
    name = create_schema(pg_url)
    try:
        yield name
    finally:
        drop_schemas(pg_url, [name])


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
