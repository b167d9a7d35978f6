"""The policy store and engine against a real PostgreSQL server.

Each test runs in a schema of its own; see conftest.py.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from authz import csvio
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.errors import EngineUnavailable
from authz.errors import LockoutRefused
from authz.errors import RuleError
from authz.errors import StaleRevision
from authz.guards import LockoutGuard
from authz.model import PolicyModel
from authz.rules import Rule
from authz.store import PolicyStore
from tests.postgres.conftest import DbState
from tests.postgres.conftest import EngineFactory

pytestmark = pytest.mark.postgres

REPORTS = Rule.of("p", "user", "/reports", "GET", "allow")
AUDITORS = Rule.of("p", "auditor", "/audit/*", "GET", "allow")
ADMIN_LINK = Rule.of("g", "admin@example.com", "admin")

#: Values a naive comma-split or a sloppy quoting would corrupt.
AWKWARD = (
    Rule.of("p", "user", "/files/a,b", "GET|POST", "allow"),
    Rule.of("p", "user", '/say/"hi"', "GET", "allow"),
    Rule.of("p", "user", '/mix/it\'s,"both",,', 'GET|"PUT"', "deny"),
    Rule.of("p", "user", '/caf\u00e9,"na\u00efve"/*', "(GET|POST),?", "allow"),
    Rule.of("p", "user", "/" + "a," * 127, ".*", "allow"),  # 255 characters, the maximum
    Rule.of("p", "user", "/" + "\u00e9," * 127, ".*", "allow"),  # 255 characters, 382 bytes
    Rule.of("p", "user", "/back\\slash,'single'", "GET", "allow"),
)


def audit_count(store: PolicyStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one()


def run_threads(*targets: Callable[[], None]) -> list[BaseException]:
    """Run the targets together (released at one barrier); return what they raised."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait(timeout=10)
                target()
            except BaseException as e:  # collected and asserted on by the caller
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer thread hung"
    return errors


# -- schema -------------------------------------------------------------------------------


def test_create_schema_on_an_empty_schema_twice_gives_revision_zero_and_one_revision_row(
    pg_engine: sa.Engine,
) -> None:
    store = PolicyStore(pg_engine)
    store.create_schema()
    store.create_schema()

    assert store.load() == (0, [])
    with pg_engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        revision_rows = conn.execute(sa.text("SELECT count(*) FROM policy_revision")).scalar_one()
    assert {"casbin_rule", "policy_revision", "audit_log"} <= tables
    assert revision_rows == 1


def test_create_schema_again_keeps_rows_revision_and_audit(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable[[], DbState]
) -> None:
    engine.apply(Change.adding(REPORTS), actor="test", source="cli")
    before = db_state()
    assert before.revision == 2 and before.audit_count == 2

    store.create_schema()
    store.create_schema()

    assert db_state() == before


def test_rows_are_stored_in_the_order_the_snapshot_holds_them(
    engine: PolicyEngine, store: PolicyStore, default_rules: tuple[Rule, ...]
) -> None:
    revision, rules = store.load()
    assert revision == 1
    assert tuple(rules) == default_rules == engine.rules()


# -- one write, one transaction -----------------------------------------------------------


def test_apply_writes_rows_audit_and_revision_in_one_transaction(
    engine: PolicyEngine,
    store: PolicyStore,
    pg_engine: sa.Engine,
    db_state: Callable[[], DbState],
    default_rules: tuple[Rule, ...],
) -> None:
    before = db_state()
    dropped = default_rules[0]
    commits: list[object] = []

    def on_commit(conn: object) -> None:
        commits.append(conn)

    sa.event.listen(pg_engine, "commit", on_commit)
    started = dt.datetime.now(dt.UTC)
    try:
        applied = engine.apply(
            Change(add=(REPORTS, AUDITORS), remove=(dropped,)),
            actor="alice@example.com",
            source="api",
            action="policy.edit",
            detail="why",
        )
    finally:
        sa.event.remove(pg_engine, "commit", on_commit)

    assert len(commits) == 1, "the rows, the audit entry and the revision share one commit"
    assert applied.added == (REPORTS, AUDITORS)
    assert applied.removed == (dropped,)
    assert applied.revision == before.revision + 1

    after = db_state()
    assert after.revision == before.revision + 1
    assert after.audit_count == before.audit_count + 1
    assert after.rules == (*default_rules[1:], REPORTS, AUDITORS)
    assert engine.revision == after.revision
    assert engine.rules() == after.rules

    entry = store.audit_entries(limit=1)[0]
    assert entry.actor == "alice@example.com"
    assert entry.source == "api"
    assert entry.action == "policy.edit"
    assert entry.detail == "why"
    assert entry.added == (REPORTS, AUDITORS)
    assert entry.removed == (dropped,)
    assert entry.revision == after.revision
    assert entry.forced is False
    assert entry.at.tzinfo is not None
    assert started - dt.timedelta(seconds=5) <= entry.at <= dt.datetime.now(dt.UTC)


def test_a_change_of_nothing_writes_no_audit_and_keeps_the_revision(
    engine: PolicyEngine, db_state: Callable[[], DbState], default_rules: tuple[Rule, ...]
) -> None:
    before = db_state()

    applied = engine.apply(
        Change(add=(default_rules[0],), remove=(REPORTS,)), actor="test", source="cli"
    )

    assert not applied.changed
    assert applied.revision == before.revision
    assert db_state() == before


def test_the_revision_row_is_locked_while_a_write_runs(
    engine: PolicyEngine, pg_engine_factory: EngineFactory, db_state: Callable[[], DbState]
) -> None:
    other = pg_engine_factory()
    seen: list[str] = []

    def probe(session: Session) -> None:
        # Another connection trying to take the revision row must find it taken.
        with other.connect() as conn:
            try:
                conn.execute(sa.text("SELECT revision FROM policy_revision FOR UPDATE NOWAIT"))
            except sa.exc.OperationalError as e:
                seen.append(type(e.orig).__name__)
            else:
                seen.append("not locked")

    engine.apply(Change.adding(REPORTS), actor="test", source="cli", hook=probe)

    assert seen == ["LockNotAvailable"]
    assert db_state().revision == 2


# -- a failed write changes nothing -------------------------------------------------------


def _insert_then_raise(session: Session) -> None:
    PolicyStore.insert_rules(session, [AUDITORS])
    session.flush()
    assert AUDITORS in PolicyStore.read_rules(session)  # written, inside the transaction
    raise RuntimeError("the account row could not be written")


def _insert_then_fail_in_sql(session: Session) -> None:
    PolicyStore.insert_rules(session, [AUDITORS])
    session.execute(sa.text("SELECT 1 / 0"))


@pytest.mark.parametrize(
    ("hook", "raised"),
    [(_insert_then_raise, RuntimeError), (_insert_then_fail_in_sql, EngineUnavailable)],
    ids=["hook-raises", "hook-sql-fails"],
)
def test_a_failing_hook_leaves_rows_audit_and_revision_unchanged(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    db_state: Callable[[], DbState],
    hook: Callable[[Session], None],
    raised: type[Exception],
) -> None:
    before = db_state()
    snapshot = engine.snapshot
    notified: list[int] = []
    engine.on_change(notified.append)

    with pytest.raises(raised):
        engine.apply(Change.adding(REPORTS), actor="test", source="cli", hook=hook)

    assert db_state() == before
    assert engine.snapshot is snapshot
    assert not engine.decide("user", "/reports", "GET").allowed
    assert notified == []
    assert other_engine.refresh() is False  # nothing for another instance to pick up


def test_a_failing_audit_write_rolls_back_the_rows_already_written(
    engine: PolicyEngine, db_state: Callable[[], DbState]
) -> None:
    # audit_log.source is VARCHAR(16): PostgreSQL refuses a longer one after the rule
    # rows were inserted in the same transaction, so those must go too.
    before = db_state()
    snapshot = engine.snapshot

    with pytest.raises(EngineUnavailable, match="not saved"):
        engine.apply(Change.adding(REPORTS), actor="test", source="x" * 40)

    assert db_state() == before
    assert engine.snapshot is snapshot
    assert not engine.decide("user", "/reports", "GET").allowed


BAD_SHAPE = [
    pytest.param(Rule.of("q", "user", "/x", "GET", "allow"), id="ptype"),
    pytest.param(Rule.of("p", "user", "/x"), id="arity"),
]
BAD_VALUE = [
    pytest.param(Rule.of("p", "user", "/x", "GET(", "allow"), id="regex"),
    pytest.param(Rule.of("p", "User", "/x", "GET", "allow"), id="subject"),
    pytest.param(Rule.of("g", "someone@example.com", "someone@example.com"), id="user-role"),
    pytest.param(Rule.of("p", "user", "", "GET", "allow"), id="empty"),
    pytest.param(Rule.of("p", "user", "/" + "a" * 255, "GET", "allow"), id="too-long"),
]


def _assert_refused_and_unchanged(
    engine: PolicyEngine, db_state: Callable[[], DbState], change: Change
) -> None:
    before = db_state()
    snapshot = engine.snapshot

    with pytest.raises(RuleError):
        engine.apply(change, actor="test", source="cli")

    assert db_state() == before
    assert engine.snapshot is snapshot


@pytest.mark.parametrize("bad", [*BAD_SHAPE, *BAD_VALUE])
def test_a_bad_row_to_add_leaves_everything_unchanged(
    engine: PolicyEngine,
    db_state: Callable[[], DbState],
    default_rules: tuple[Rule, ...],
    bad: Rule,
) -> None:
    change = Change(add=(REPORTS, bad), remove=(default_rules[0],))
    _assert_refused_and_unchanged(engine, db_state, change)


@pytest.mark.parametrize("bad", BAD_SHAPE)
def test_a_misshapen_row_to_remove_leaves_everything_unchanged(
    engine: PolicyEngine,
    db_state: Callable[[], DbState],
    default_rules: tuple[Rule, ...],
    bad: Rule,
) -> None:
    change = Change(add=(REPORTS,), remove=(default_rules[0], bad))
    _assert_refused_and_unchanged(engine, db_state, change)


def test_a_stored_row_that_no_longer_validates_can_be_removed(
    engine: PolicyEngine,
    store: PolicyStore,
    db_state: Callable[[], DbState],
    default_rules: tuple[Rule, ...],
) -> None:
    legacy = Rule.of("p", "Legacy Role", "old/path", "GET(", "allow")  # fails every check
    with store.transaction() as session:
        PolicyStore.insert_rules(session, [legacy])
    engine.load()
    # Listed as a bad row (an allow row: skipped), never decided on, and still removable.
    assert legacy not in engine.rules()
    assert [bad.rule for bad in engine.bad_rows] == [legacy]

    applied = engine.apply(Change.removing(legacy), actor="test", source="cli", strict=True)

    assert applied.removed == (legacy,)
    assert db_state().rules == default_rules


def test_a_refused_lockout_leaves_everything_unchanged(
    model: PolicyModel, store: PolicyStore, engine: PolicyEngine, db_state: Callable[[], DbState]
) -> None:
    engine.apply(Change.adding(ADMIN_LINK), actor="test", source="cli")
    guarded = PolicyEngine(
        model, store, guard=LockoutGuard(), active_subjects=lambda _s: ["admin@example.com"]
    )
    guarded.load()
    before = db_state()

    with pytest.raises(LockoutRefused):
        guarded.apply(Change.removing(ADMIN_LINK), actor="test", source="api")
    assert db_state() == before

    forced = guarded.apply(Change.removing(ADMIN_LINK), actor="test", source="cli", force=True)
    assert forced.removed == (ADMIN_LINK,)
    assert db_state().revision == before.revision + 1
    assert store.audit_entries(limit=1)[0].forced is True


def test_audit_entries_filter_by_aware_times_in_any_zone(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    engine.apply(Change.adding(REPORTS), actor="alice@example.com", source="api")
    entry = store.audit_entries(limit=1)[0]
    assert entry.at.utcoffset() == dt.timedelta(0)
    elsewhere = dt.timezone(dt.timedelta(hours=-7))
    written = entry.at.astimezone(elsewhere)
    tick = dt.timedelta(microseconds=1)

    # Bounds are exact to the microsecond: since is inclusive, until exclusive.
    found = store.audit_entries(since=written, until=written + tick)
    assert [e.id for e in found] == [entry.id]
    assert store.audit_entries(since=written + tick) == []
    assert entry.id not in [e.id for e in store.audit_entries(until=written)]
    assert [e.actor for e in store.audit_entries(until=written)] == ["test"]
    assert [e.id for e in store.audit_entries(actor="alice@example.com")] == [entry.id]


# -- values survive the database ----------------------------------------------------------


def test_values_with_commas_and_quotes_round_trip_exactly(
    engine: PolicyEngine,
    store: PolicyStore,
    other_engine: PolicyEngine,
    default_rules: tuple[Rule, ...],
) -> None:
    engine.apply(Change(add=AWKWARD), actor="test", source="cli")

    revision, rules = store.load()
    assert revision == 2
    assert tuple(rules) == (*default_rules, *AWKWARD)
    assert store.audit_entries(limit=1)[0].added == AWKWARD

    # Another instance loading from the database holds and decides on the same values.
    assert other_engine.refresh() is True
    assert other_engine.rules() == (*default_rules, *AWKWARD)
    decision = other_engine.decide("user", "/files/a,b", "POST")
    assert decision.allowed and decision.rule == AWKWARD[0]
    decision = other_engine.decide("user", '/say/"hi"', "GET")
    assert decision.allowed and decision.rule == AWKWARD[1]
    assert not other_engine.decide("user", '/mix/it\'s,"both",,', '"PUT"').allowed

    # Exported and parsed back, the stored rows are the same rows.
    assert csvio.parse(csvio.export(rules), engine.model).rules == tuple(
        sorted(rules, key=lambda r: (r.is_role_link, r.ptype))
    )

    # A removal matches the stored value exactly, commas and quotes included.
    applied = other_engine.apply(Change.removing(*AWKWARD), actor="test", source="cli")
    assert applied.removed == AWKWARD
    assert store.load() == (3, list(default_rules))


# -- several instances --------------------------------------------------------------------


def test_load_pairs_the_revision_with_the_rows_of_that_revision(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    store: PolicyStore,
    pg_engine: sa.Engine,
    default_rules: tuple[Rule, ...],
) -> None:
    committed: list[int] = []

    def commit_between(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        # Another instance commits a write after the revision was read, before the rows are.
        if "policy_revision" in statement and not committed:
            applied = other_engine.apply(Change.adding(REPORTS), actor="test", source="api")
            committed.append(applied.revision)

    sa.event.listen(pg_engine, "after_cursor_execute", commit_between)
    try:
        revision, rules = store.load()
    finally:
        sa.event.remove(pg_engine, "after_cursor_execute", commit_between)

    assert committed == [2]
    assert (revision, rules) in [(1, list(default_rules)), (2, [*default_rules, REPORTS])]


def test_two_instances_writing_concurrently_lose_no_update(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    store: PolicyStore,
    db_state: Callable[[], DbState],
    default_rules: tuple[Rule, ...],
) -> None:
    initial = db_state()
    a_rows = [Rule.of("p", "user", f"/a/{i}", "GET", "allow") for i in range(20)]
    b_rows = [Rule.of("p", "user", f"/b/{i}", "GET", "allow") for i in range(20)]

    def writer(policy_engine: PolicyEngine, rows: list[Rule], actor: str) -> Callable[[], None]:
        def run() -> None:
            for row in rows:
                applied = policy_engine.apply(Change.adding(row), actor=actor, source="api")
                assert applied.added == (row,)

        return run

    errors = run_threads(
        writer(engine, a_rows, "a@example.com"), writer(other_engine, b_rows, "b@example.com")
    )

    assert errors == []
    after = db_state()
    assert sorted(after.rules) == sorted([*default_rules, *a_rows, *b_rows])
    assert len(after.rules) == len(set(after.rules))
    assert after.audit_count == initial.audit_count + 40
    assert after.revision == initial.revision + 40
    entries = store.audit_entries(limit=100)
    revisions = sorted(e.revision for e in entries if e.actor != "test")
    assert revisions == list(range(initial.revision + 1, initial.revision + 41))
    for policy_engine in (engine, other_engine):
        policy_engine.refresh()
        assert policy_engine.revision == after.revision
        assert sorted(policy_engine.rules()) == sorted(after.rules)


def test_two_instances_adding_the_same_rows_concurrently_store_each_once(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    db_state: Callable[[], DbState],
    default_rules: tuple[Rule, ...],
) -> None:
    initial = db_state()
    rows = [Rule.of("p", "user", f"/same/{i}", "GET", "allow") for i in range(20)]
    added: list[Rule] = []

    def writer(policy_engine: PolicyEngine) -> Callable[[], None]:
        def run() -> None:
            for row in rows:
                added.extend(
                    policy_engine.apply(Change.adding(row), actor="test", source="api").added
                )

        return run

    assert run_threads(writer(engine), writer(other_engine)) == []

    after = db_state()
    assert sorted(added) == sorted(rows), "each row is reported added by exactly one writer"
    assert sorted(after.rules) == sorted([*default_rules, *rows])
    assert len(after.rules) == len(set(after.rules))
    assert after.revision == initial.revision + 20
    assert after.audit_count == initial.audit_count + 20


def test_two_instances_racing_on_one_expected_revision_one_wins(
    engine: PolicyEngine, other_engine: PolicyEngine, db_state: Callable[[], DbState]
) -> None:
    start = db_state()
    wins: list[int] = []

    def editor(policy_engine: PolicyEngine, row: Rule) -> Callable[[], None]:
        def run() -> None:
            applied = policy_engine.apply(
                Change.adding(row), actor="test", source="ui", expected_revision=start.revision
            )
            wins.append(applied.revision)

        return run

    errors = run_threads(editor(engine, REPORTS), editor(other_engine, AUDITORS))

    assert wins == [start.revision + 1]
    assert len(errors) == 1 and isinstance(errors[0], StaleRevision)
    assert (errors[0].expected, errors[0].current) == (start.revision, start.revision + 1)
    after = db_state()
    assert after.revision == start.revision + 1
    assert after.audit_count == start.audit_count + 1
    assert len([r for r in after.rules if r in (REPORTS, AUDITORS)]) == 1


def test_stale_expected_revision_is_refused_and_changes_nothing(
    engine: PolicyEngine, other_engine: PolicyEngine, db_state: Callable[[], DbState]
) -> None:
    seen = engine.revision
    other_engine.apply(Change.adding(AUDITORS), actor="test", source="ui")
    before = db_state()
    assert before.revision == seen + 1

    with pytest.raises(StaleRevision) as caught:
        engine.apply(Change.adding(REPORTS), actor="test", source="ui", expected_revision=seen)

    assert (caught.value.expected, caught.value.current) == (seen, seen + 1)
    assert db_state() == before
    # At the current revision the same edit goes through.
    applied = engine.apply(
        Change.adding(REPORTS), actor="test", source="ui", expected_revision=before.revision
    )
    assert applied.revision == before.revision + 1


def test_refresh_on_the_second_engine_sees_the_first_engines_writes(
    engine: PolicyEngine, other_engine: PolicyEngine
) -> None:
    assert other_engine.refresh() is False  # nothing new yet
    engine.apply(Change.adding(REPORTS), actor="test", source="api")

    # Decisions come from the snapshot: until it refreshes, the second engine is behind.
    assert not other_engine.decide("user", "/reports", "GET").allowed
    assert other_engine.refresh() is True
    decision = other_engine.decide("user", "/reports", "GET")
    assert decision.allowed and decision.rule == REPORTS
    assert other_engine.revision == engine.revision
    assert other_engine.refresh() is False

    engine.apply(Change.removing(REPORTS), actor="test", source="api")
    assert other_engine.refresh() is True
    assert not other_engine.decide("user", "/reports", "GET").allowed
    assert other_engine.rules() == engine.rules()


def test_a_stale_instance_writes_against_what_is_stored(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    db_state: Callable[[], DbState],
    default_rules: tuple[Rule, ...],
) -> None:
    engine.apply(Change.adding(REPORTS), actor="test", source="api")
    assert REPORTS not in other_engine.rules()  # not refreshed

    again = other_engine.apply(Change.adding(REPORTS), actor="test", source="api")
    assert not again.changed  # already stored: not added twice
    removed = other_engine.apply(Change.removing(REPORTS), actor="test", source="api")
    assert removed.removed == (REPORTS,)

    after = db_state()
    assert after.rules == default_rules
    assert other_engine.rules() == default_rules
    assert other_engine.revision == after.revision == 3


def test_decisions_make_no_database_round_trip(engine: PolicyEngine, pg_engine: sa.Engine) -> None:
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    sa.event.listen(pg_engine, "before_cursor_execute", record)
    try:
        for _ in range(50):
            assert engine.decide("admin", "/admin/users", "DELETE").allowed
            assert not engine.decide("user", "/admin/users", "GET").allowed
    finally:
        sa.event.remove(pg_engine, "before_cursor_execute", record)
    assert statements == []


def test_load_from_a_closed_port_raises_engine_unavailable(model: PolicyModel) -> None:
    closed = sa.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 5}
    )
    try:
        policy_engine = PolicyEngine(model, PolicyStore(closed))
        with pytest.raises(EngineUnavailable, match="cannot read the policy"):
            policy_engine.load()
        assert not policy_engine.loaded
        with pytest.raises(EngineUnavailable):
            policy_engine.decide("anonymous", "/login", "GET")  # never allow by fallback
        with pytest.raises(EngineUnavailable):
            policy_engine.refresh()
        with pytest.raises(EngineUnavailable, match="not saved"):
            policy_engine.apply(Change.adding(REPORTS), actor="test", source="cli")
    finally:
        closed.dispose()
