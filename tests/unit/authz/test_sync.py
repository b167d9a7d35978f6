"""authz.sync: the revision poll that carries one instance's change to the others."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from authz.engine import Change
from authz.engine import PolicyEngine
from authz.rules import Rule
from authz.store import PolicyStore
from authz.sync import RevisionPoller

REPORTS = Rule.of("p", "user", "/reports/*", "GET", "allow")


def test_poll_once_reloads_after_another_engines_write(
    engine: PolicyEngine, other_engine: PolicyEngine
) -> None:
    """A write on one instance is picked up by the next poll on another."""
    poller = RevisionPoller(engine)
    other_engine.apply(Change.adding(REPORTS), actor="t", source="api")
    assert not engine.decide("user", "/reports/q3", "GET").allowed
    assert poller.poll_once() is True
    assert engine.revision == 2
    assert engine.decide("user", "/reports/q3", "GET").allowed


def test_poll_once_without_a_change(engine: PolicyEngine) -> None:
    """When the revision has not moved, poll_once keeps the snapshot and returns False."""
    snapshot = engine.snapshot
    poller = RevisionPoller(engine)
    assert poller.poll_once() is False
    assert engine.snapshot is snapshot


def test_poll_once_after_an_own_write(engine: PolicyEngine) -> None:
    """An engine's own write already swapped its snapshot: nothing to reload."""
    engine.apply(Change.adding(REPORTS), actor="t", source="cli")
    assert RevisionPoller(engine).poll_once() is False


def test_poll_once_is_cheap(engine: PolicyEngine, store: PolicyStore) -> None:
    """An unchanged poll is one query."""
    statements: list[object] = []

    def record(*args: object) -> None:
        statements.append(args[2])

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        RevisionPoller(engine).poll_once()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    assert len(statements) == 1


def test_poll_once_survives_a_lost_database(
    engine: PolicyEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the database is unreachable the poll logs, returns False and keeps deciding."""
    snapshot = engine.snapshot
    engine.store = PolicyStore(sa.create_engine(f"sqlite:///{tmp_path / 'gone' / 'p.db'}"))
    assert RevisionPoller(engine).poll_once() is False
    assert engine.snapshot is snapshot
    assert "policy refresh failed" in caplog.text
    assert engine.decide("admin", "/admin/", "GET").allowed


def test_the_polling_thread_carries_a_change_over(
    engine: PolicyEngine, other_engine: PolicyEngine
) -> None:
    """Started, the poller reloads within its interval; stopped, the thread is gone."""

    def pollers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "authz-poller"}

    before = pollers()
    poller = RevisionPoller(engine, interval=0.02)
    poller.start()
    poller.start()  # idempotent
    try:
        other_engine.apply(Change.adding(REPORTS), actor="t", source="api")
        deadline = time.monotonic() + 5
        while engine.revision != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.decide("user", "/reports/q3", "GET").allowed
    finally:
        poller.stop()
    assert pollers() == before


def wait_for(condition: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.01)


def test_the_polling_thread_survives_driver_errors_and_garbage(
    engine: PolicyEngine, store: PolicyStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither a raw cursor's sqlite3 error nor a nonsense revision ends the polling."""
    poller = RevisionPoller(engine, interval=0.02)
    poller.start()
    try:
        with store.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE casbin_rule RENAME TO casbin_rule_away"))
            conn.execute(sa.text("UPDATE policy_revision SET revision = 2"))
        wait_for(lambda: "no such table: casbin_rule" in caplog.text)
        # A revision that is not a number (SQLite stores what it is given).
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE policy_revision SET revision = 'two'"))
        wait_for(lambda: "failed unexpectedly" in caplog.text)
        assert poller._thread is not None and poller._thread.is_alive()
        assert engine.decide("admin", "/admin/", "GET").allowed  # the snapshot still decides

        with store.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE casbin_rule_away RENAME TO casbin_rule"))
            conn.execute(
                sa.text(
                    "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) "
                    "VALUES ('p', 'user', '/reports/*', 'GET', 'allow')"
                )
            )
            conn.execute(sa.text("UPDATE policy_revision SET revision = 2"))
        wait_for(lambda: engine.revision == 2)
        assert engine.decide("user", "/reports/q3", "GET").allowed
    finally:
        poller.stop()
