"""Fixtures for the policy engine's unit tests: the shipped model, a SQLite store, an engine."""

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

#: The repository root, found from this file so the tests run from any directory.
REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "tests" / "data"


@dataclass(frozen=True)
class DbState:
    """What a write may change: the stored revision, the rule rows, the number of audit entries."""

    revision: int
    #: every stored row, sorted, duplicates kept (so a doubled row shows).
    rules: tuple[Rule, ...]
    audit_count: int


@pytest.fixture
def data_dir() -> Path:
    """The corpus of model variants and policy CSVs."""
    return DATA


@pytest.fixture
def model() -> PolicyModel:
    """The model.conf that ships with the repository."""
    return PolicyModel.from_file(REPO / "model.conf")


@pytest.fixture
def default_rules(model: PolicyModel) -> tuple[Rule, ...]:
    """The rows of policies/default.csv, validated and normalized."""
    return csvio.read_file(REPO / "policies" / "default.csv", model).rules


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PolicyStore]:
    """A PolicyStore on a real SQLite file, schema created."""
    db = sa.create_engine(f"sqlite:///{tmp_path / 'policy.db'}")
    policy_store = PolicyStore(db)
    policy_store.create_schema()
    yield policy_store
    db.dispose()


@pytest.fixture
def engine(model: PolicyModel, store: PolicyStore, default_rules: tuple[Rule, ...]) -> PolicyEngine:
    """A loaded PolicyEngine holding the default policy (revision 1, one audit entry)."""
    policy_engine = PolicyEngine(model, store)
    policy_engine.load()
    policy_engine.apply(Change.adding(*default_rules), actor="test", source="cli")
    return policy_engine


@pytest.fixture
def other_engine(
    model: PolicyModel, store: PolicyStore, engine: PolicyEngine
) -> Iterator[PolicyEngine]:
    """A second, independently loaded engine on the same database (another instance)."""
    db = sa.create_engine(store.engine.url)
    second = PolicyEngine(model, PolicyStore(db))
    second.load()
    yield second
    db.dispose()


@pytest.fixture
def db_state(store: PolicyStore) -> Callable[[], DbState]:
    """Return a function reading the revision, rule rows and audit count from the database."""

    def read() -> DbState:
        revision, rules = store.load()
        with store.engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one()
        return DbState(revision, tuple(sorted(rules)), count)

    return read
