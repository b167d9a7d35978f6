"""A production worker freezes the collector after a full load, and gunicorn forks workers
from a master that loaded the policy: what a replaced snapshot and a fork leave behind."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path

import pytest
import sqlalchemy as sa

from authz.engine import Change
from authz.engine import PolicyEngine
from authz.model import PolicyModel
from authz.rules import Rule
from authz.store import PolicyStore
from authz.sync import RevisionPoller

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def model() -> PolicyModel:
    return PolicyModel.from_file(REPO / "model.conf")


def make_store(path: Path) -> PolicyStore:
    return PolicyStore(sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool))


def filled(model: PolicyModel, path: Path) -> PolicyEngine:
    store = make_store(path)
    store.create_schema()
    writer = PolicyEngine(model, store)
    writer.load()
    writer.apply(
        Change.adding(
            Rule.of("p", "user", "/a", "GET", "allow"),
            Rule.of("p", "team", "/t/*", "GET|POST", "allow"),
            Rule.of("g", "a@example.com", "user"),
            Rule.of("g", "b@example.com", "user"),
            Rule.of("g", "b@example.com", "team"),
            Rule.of("g", "team", "user"),
        ),
        actor="t",
        source="cli",
    )
    return writer


def test_a_replaced_snapshot_is_freed_without_the_collector(
    model: PolicyModel, tmp_path: Path
) -> None:
    """No reference cycle in a snapshot the index decides: frozen or not, reference
    counting alone frees it once replaced (a frozen cycle would stay forever)."""
    filled(model, tmp_path / "p.db")
    engine = PolicyEngine(model, make_store(tmp_path / "p.db"))
    engine.load()
    first = engine.snapshot
    # Decide through every path of the index first (single role, several roles, caches).
    assert first.decide("a@example.com", "/a", "GET").allowed
    assert first.decide("b@example.com", "/t/x", "POST").allowed
    index = weakref.ref(first.decider.index)  # type: ignore[attr-defined]
    decider = weakref.ref(first.decider)
    del first
    gc.disable()
    try:
        engine.load()
        assert index() is None and decider() is None
    finally:
        gc.enable()


def test_a_frozen_collector_does_not_keep_replaced_snapshots(
    model: PolicyModel, tmp_path: Path
) -> None:
    filled(model, tmp_path / "p.db")
    engine = PolicyEngine(model, make_store(tmp_path / "p.db"), freeze_gc=True)
    try:
        engine.load()
        assert engine.decide("b@example.com", "/t/x", "GET").allowed
        first = weakref.ref(engine.snapshot.decider.index)  # type: ignore[attr-defined]
        engine.load()
        assert first() is None, "the replaced index stays in the permanent generation"
        assert engine.decide("b@example.com", "/t/x", "GET").allowed
    finally:
        gc.unfreeze()


def test_stopping_before_a_fork_waits_for_a_refresh_in_progress(
    model: PolicyModel, tmp_path: Path
) -> None:
    """A full read still running when the master forks would leave the engine's lock held
    in every worker, whose refreshes would then wait forever."""
    writer = filled(model, tmp_path / "p.db")
    engine = PolicyEngine(model, make_store(tmp_path / "p.db"))
    engine.load()
    original = engine.store.load_rows
    reading = threading.Event()

    def slow(*args: object, **kwargs: object) -> object:
        reading.set()
        time.sleep(1.5)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    engine.store.load_rows = slow  # type: ignore[method-assign]
    engine.store.read_changes = lambda *a, **k: None  # type: ignore[method-assign]
    poller = RevisionPoller(engine, 0.05)
    poller.start()
    writer.apply(Change.adding(Rule.of("p", "user", "/b", "GET", "allow")), actor="t", source="cli")
    assert reading.wait(5)
    poller.stop(timeout=None)  # what service.before_fork does
    assert not engine._advance_lock.locked()
    assert not any(t.name == "authz-poller" for t in threading.enumerate())
    assert engine.revision == writer.revision


def test_a_forked_engine_has_locks_of_its_own(model: PolicyModel, tmp_path: Path) -> None:
    writer = filled(model, tmp_path / "p.db")
    engine = PolicyEngine(model, make_store(tmp_path / "p.db"))
    engine.load()
    engine._advance_lock.acquire()  # as if a thread of the parent held it at the fork
    engine.after_fork()
    writer.apply(Change.adding(Rule.of("p", "user", "/c", "GET", "allow")), actor="t", source="cli")
    assert engine.refresh()
    assert engine.decide("a@example.com", "/c", "GET").allowed
