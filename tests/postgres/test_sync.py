"""Change propagation between instances through the revision poll, on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from authz.engine import Change
from authz.engine import PolicyEngine
from authz.rules import Rule
from authz.sync import RevisionPoller

pytestmark = pytest.mark.postgres

REPORTS = Rule.of("p", "user", "/reports", "GET", "allow")
DENY_LOGOUT = Rule.of("p", "user", "/logout", "POST", "deny")
#: Section 8: a change on one instance reaches every other within a second.
PROPAGATION_DEADLINE = 1.0
INTERVAL = 0.05


def wait_until(condition: Callable[[], bool], deadline: float = PROPAGATION_DEADLINE) -> float:
    """Poll ``condition`` until it holds; return the seconds it took, or fail at the deadline."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > deadline:
            pytest.fail(f"condition not met within {deadline} s")
        time.sleep(0.01)


def poller_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "authz-poller"]


@pytest.fixture
def poller(other_engine: PolicyEngine) -> Iterator[RevisionPoller]:
    """A started poller on the second instance; stopped afterwards whatever happened."""
    started = RevisionPoller(other_engine, interval=INTERVAL)
    started.start()
    yield started
    started.stop()


def test_a_write_on_one_instance_reaches_the_other_within_a_second(
    engine: PolicyEngine, other_engine: PolicyEngine, poller: RevisionPoller
) -> None:
    assert not other_engine.decide("user", "/reports", "GET").allowed

    engine.apply(Change.adding(REPORTS), actor="test", source="api")
    wait_until(lambda: other_engine.decide("user", "/reports", "GET").allowed)
    assert other_engine.decide("user", "/reports", "GET").rule == REPORTS
    assert other_engine.revision == engine.revision

    # Removals and deny rows travel the same way.
    assert other_engine.decide("user", "/logout", "POST").allowed
    engine.apply(Change(add=(DENY_LOGOUT,), remove=(REPORTS,)), actor="test", source="api")
    wait_until(lambda: not other_engine.decide("user", "/logout", "POST").allowed)
    assert not other_engine.decide("user", "/reports", "GET").allowed
    assert other_engine.rules() == engine.rules()

    poller.stop()
    assert poller_threads() == []


def test_start_is_idempotent_and_stop_ends_the_polling(
    engine: PolicyEngine, other_engine: PolicyEngine, poller: RevisionPoller
) -> None:
    poller.start()
    assert len(poller_threads()) == 1

    poller.stop()
    assert poller_threads() == []
    engine.apply(Change.adding(REPORTS), actor="test", source="api")
    time.sleep(INTERVAL * 6)  # several intervals: a live poller would have reloaded by now
    assert not other_engine.decide("user", "/reports", "GET").allowed
    assert other_engine.revision == engine.revision - 1


def test_a_failed_poll_keeps_the_snapshot_and_polling_resumes(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    poller: RevisionPoller,
    pg_url: str,
    pg_schema: str,
) -> None:
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    quote = admin.dialect.identifier_preparer.quote_identifier
    hidden = f"{pg_schema}_away"
    try:
        # The instances' search_path now names no schema: every poll fails.
        with admin.begin() as conn:
            conn.exec_driver_sql(f"ALTER SCHEMA {quote(pg_schema)} RENAME TO {quote(hidden)}")
        # A poll that began before the rename may still finish well: let it land first.
        time.sleep(INTERVAL * 2)
        failed_at = time.monotonic()
        time.sleep(INTERVAL * 6)
        assert other_engine.verified_at < failed_at, "a failed poll counted as a check"
        assert other_engine.decide("user", "/", "GET").allowed  # still served from memory
        assert [t.is_alive() for t in poller_threads()] == [True]
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"ALTER SCHEMA {quote(hidden)} RENAME TO {quote(pg_schema)}")
        admin.dispose()

    engine.apply(Change.adding(REPORTS), actor="test", source="api")
    wait_until(lambda: other_engine.decide("user", "/reports", "GET").allowed)
    assert other_engine.revision == engine.revision


def test_a_stopped_poller_polls_again_when_started_again(
    engine: PolicyEngine, other_engine: PolicyEngine, poller: RevisionPoller
) -> None:
    poller.stop()
    poller.start()

    engine.apply(Change.adding(REPORTS), actor="test", source="api")
    wait_until(lambda: other_engine.decide("user", "/reports", "GET").allowed)


def test_a_notification_reaches_another_instance_before_any_poll(
    engine: PolicyEngine, other_engine: PolicyEngine
) -> None:
    """On PostgreSQL a committed write wakes the other instance through LISTEN/NOTIFY."""
    from authz.sync import PostgresListener

    listener = PostgresListener(other_engine)
    listener.start()
    try:
        assert listener.listening.wait(5)
        rule = Rule.of("p", "user", "/notified", "GET", "allow")
        assert not other_engine.decide("user", "/notified", "GET").allowed
        engine.apply(Change.adding(rule), actor="test", source="cli")
        deadline = time.monotonic() + 1.0  # no poller runs: only the notification can do it
        while (
            time.monotonic() < deadline
            and not other_engine.decide("user", "/notified", "GET").allowed
        ):
            time.sleep(0.01)
        assert other_engine.decide("user", "/notified", "GET").allowed
    finally:
        listener.stop()
