"""authz.engine: snapshot reads without the database, and audited, all-or-nothing writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from authz.engine import Applied
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.errors import EngineUnavailable
from authz.errors import NotFound
from authz.errors import RuleError
from authz.errors import StaleRevision
from authz.model import PolicyModel
from authz.rules import Rule
from authz.store import PolicyStore

ALICE = "alice@example.com"
REPORTS = Rule.of("p", "user", "/reports/*", "GET", "allow")
HOME = Rule.of("p", "user", "/", "GET", "allow")


def unreachable_store(tmp_path: Path) -> PolicyStore:
    """A store whose SQLite file lies in a directory that does not exist."""
    return PolicyStore(sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'policy.db'}"))


# -- reading ---------------------------------------------------------------------------


def test_decisions_make_no_database_query(engine: PolicyEngine, store: PolicyStore) -> None:
    """decide and explain read the in-memory snapshot only."""
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))  # (conn, cursor, statement, parameters, ...)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        for sub, obj, act in [("admin", "/", "GET"), ("anonymous", "/admin/", "POST")]:
            engine.decide(sub, obj, act)
            engine.explain(sub, obj, act)
        engine.roles_for("admin")
        engine.rules()
        assert statements == []
        store.revision()  # the listener does see a real query
        assert len(statements) == 1
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)


def test_decisions_survive_a_lost_database(engine: PolicyEngine, tmp_path: Path) -> None:
    """With the database gone, the loaded snapshot still decides."""
    engine.store.engine.dispose()
    engine.store = unreachable_store(tmp_path)
    assert engine.decide("admin", "/admin/", "GET").allowed
    assert not engine.decide("anonymous", "/admin/", "GET").allowed


def test_decide_before_load_is_unavailable(model: PolicyModel, store: PolicyStore) -> None:
    """A never-loaded engine refuses to decide rather than guessing."""
    engine = PolicyEngine(model, store)
    assert not engine.loaded
    with pytest.raises(EngineUnavailable):
        engine.decide("admin", "/", "GET")
    with pytest.raises(EngineUnavailable):
        engine.explain("admin", "/", "GET")
    with pytest.raises(EngineUnavailable):
        _ = engine.revision


def test_load_from_an_unreachable_database(model: PolicyModel, tmp_path: Path) -> None:
    """load() on a database that cannot be opened raises EngineUnavailable."""
    engine = PolicyEngine(model, unreachable_store(tmp_path))
    with pytest.raises(EngineUnavailable):
        engine.load()
    assert not engine.loaded
    with pytest.raises(EngineUnavailable):
        engine.decide("admin", "/", "GET")


def test_load_reads_rows_and_revision(
    engine: PolicyEngine, model: PolicyModel, store: PolicyStore, default_rules: tuple[Rule, ...]
) -> None:
    """A fresh engine on a written database loads every row and the revision."""
    fresh = PolicyEngine(model, store)
    fresh.load()
    assert fresh.loaded
    assert fresh.revision == 1
    assert fresh.rules() == default_rules


def test_a_taken_snapshot_never_changes(engine: PolicyEngine) -> None:
    """A write swaps in a new snapshot; one already taken keeps deciding the old way."""
    before = engine.snapshot
    engine.apply(Change.adding(REPORTS), actor="test", source="cli")
    assert engine.snapshot is not before
    assert not before.decide("user", "/reports/1", "GET").allowed
    assert engine.decide("user", "/reports/1", "GET").allowed
    assert before.revision == 1 and engine.revision == 2


# -- writing ---------------------------------------------------------------------------


def test_apply_writes_rows_one_audit_entry_and_one_revision(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable
) -> None:
    """A change writes its rows, exactly one audit entry, and bumps the revision by one."""
    before = db_state()
    applied = engine.apply(
        Change(add=(REPORTS, Rule.of("g", ALICE, "admin")), remove=(HOME,)),
        actor="ops@example.com",
        source="api",
        action="policy.edit",
        detail="ticket 12",
    )
    after = db_state()
    assert applied == Applied(
        added=(REPORTS, Rule.of("g", ALICE, "admin")), removed=(HOME,), revision=2
    )
    assert applied.changed
    assert after.revision == before.revision + 1 == engine.revision
    assert set(after.rules) == (set(before.rules) | {REPORTS, Rule.of("g", ALICE, "admin")}) - {
        HOME
    }
    assert after.audit_count == before.audit_count + 1
    entry = store.audit_entries(limit=1)[0]
    assert (entry.actor, entry.source, entry.action, entry.detail) == (
        "ops@example.com",
        "api",
        "policy.edit",
        "ticket 12",
    )
    assert entry.added == (REPORTS, Rule.of("g", ALICE, "admin"))
    assert entry.removed == (HOME,)
    assert (entry.forced, entry.revision) == (False, 2)
    assert set(engine.rules()) == set(after.rules)


def test_apply_normalizes_rows(engine: PolicyEngine, db_state: Callable) -> None:
    """A p row without an effect is stored with 'allow'; removal matches it the same way."""
    engine.apply(Change.adding(Rule.of("p", "user", "/reports/*", "GET")), actor="t", source="cli")
    assert REPORTS in db_state().rules
    engine.apply(
        Change.removing(Rule.of("p", "user", "/reports/*", "GET")), actor="t", source="cli"
    )
    assert REPORTS not in db_state().rules


INVALID = [
    pytest.param(Rule.of("x", "user", "/", "GET"), id="unknown-ptype"),
    pytest.param(Rule.of("p", "user", "/"), id="arity"),
    pytest.param(Rule.of("p", "user", "/a/(", "GET"), id="bad-pattern"),
    pytest.param(Rule.of("g", ALICE, "Admin"), id="bad-role"),
    pytest.param(Rule.of("g", "admin", "admin"), id="self-inheritance"),
]


@pytest.mark.parametrize("bad", INVALID)
def test_an_invalid_row_to_add_changes_nothing(
    engine: PolicyEngine, db_state: Callable, bad: Rule
) -> None:
    """One invalid row in a change raises RuleError and nothing is written."""
    before, snapshot = db_state(), engine.snapshot
    with pytest.raises(RuleError):
        engine.apply(Change(add=(REPORTS, bad)), actor="test", source="cli")
    assert db_state() == before
    assert engine.snapshot is snapshot


@pytest.mark.parametrize("bad", INVALID[:2])
def test_a_row_to_remove_of_the_wrong_shape_changes_nothing(
    engine: PolicyEngine, db_state: Callable, bad: Rule
) -> None:
    """A row to remove must at least have a known type and the right arity."""
    before, snapshot = db_state(), engine.snapshot
    with pytest.raises(RuleError):
        engine.apply(Change(add=(REPORTS,), remove=(HOME, bad)), actor="test", source="cli")
    assert db_state() == before
    assert engine.snapshot is snapshot


def test_a_stored_row_that_no_longer_validates_can_be_removed(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable
) -> None:
    """Rows written before a model change (or by hand) can still be taken out."""
    legacy = Rule.of("g", ALICE, "Admin")
    with store.transaction() as session:
        store.insert_rules(session, [legacy])
    engine.load()
    # Not decided on (it would not validate), but listed, and removable.
    assert legacy not in engine.snapshot.ruleset
    assert [bad.rule for bad in engine.bad_rows] == [legacy]
    applied = engine.apply(Change.removing(legacy), actor="test", source="cli")
    assert applied.removed == (legacy,)
    assert legacy not in db_state().rules
    assert engine.bad_rows == ()


def test_stale_revision_changes_nothing(engine: PolicyEngine, db_state: Callable) -> None:
    """A change based on an old revision raises StaleRevision and writes nothing."""
    before, snapshot = db_state(), engine.snapshot
    with pytest.raises(StaleRevision) as info:
        engine.apply(Change.adding(REPORTS), actor="t", source="api", expected_revision=0)
    assert (info.value.expected, info.value.current) == (0, 1)
    assert db_state() == before
    assert engine.snapshot is snapshot


def test_expected_revision_that_is_current_is_applied(
    engine: PolicyEngine, db_state: Callable
) -> None:
    """The right expected_revision lets the change through."""
    applied = engine.apply(Change.adding(REPORTS), actor="t", source="api", expected_revision=1)
    assert applied.revision == 2
    assert db_state().revision == 2


def test_strict_removal_of_an_absent_row(engine: PolicyEngine, db_state: Callable) -> None:
    """With strict=True removing a row that is not there raises NotFound and changes nothing."""
    before = db_state()
    with pytest.raises(NotFound):
        engine.apply(
            Change(add=(REPORTS,), remove=(HOME, Rule.of("g", ALICE, "admin"))),
            actor="t",
            source="api",
            strict=True,
        )
    assert db_state() == before


def test_lenient_removal_of_an_absent_row_is_a_no_op(
    engine: PolicyEngine, db_state: Callable
) -> None:
    """Without strict, an absent row is skipped and nothing is recorded."""
    before = db_state()
    applied = engine.apply(Change.removing(REPORTS), actor="t", source="cli")
    assert applied == Applied((), (), 1)
    assert db_state() == before


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(Change.adding(HOME), id="add-existing"),
        pytest.param(Change.adding(Rule.of("p", "user", "/", "GET")), id="add-existing-short"),
        pytest.param(Change(add=(HOME,), remove=(HOME,)), id="remove-and-re-add"),
        pytest.param(Change(), id="empty"),
    ],
)
def test_a_change_that_changes_nothing_is_not_recorded(
    engine: PolicyEngine, db_state: Callable, change: Change
) -> None:
    """Adding a present row is a no-op: no new row, no audit entry, no revision bump."""
    before, snapshot = db_state(), engine.snapshot
    applied = engine.apply(change, actor="t", source="cli")
    assert not applied.changed
    assert applied.revision == 1
    assert db_state() == before
    assert engine.snapshot is snapshot


def test_duplicates_within_one_change_are_added_once(
    engine: PolicyEngine, db_state: Callable
) -> None:
    """The same row twice in one change is stored once."""
    applied = engine.apply(Change.adding(REPORTS, REPORTS), actor="t", source="cli")
    assert applied.added == (REPORTS,)
    assert db_state().rules.count(REPORTS) == 1


@pytest.fixture
def accounts(store: PolicyStore) -> sa.Table:
    """A table of the caller's own (like the service's users), in the policy database."""
    table = sa.Table("accounts", sa.MetaData(), sa.Column("email", sa.String(255)))
    with store.engine.begin() as conn:
        table.create(conn)
    return table


def count_accounts(store: PolicyStore, accounts: sa.Table) -> int:
    """Return the number of account rows."""
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one()


def test_a_failing_hook_rolls_everything_back(
    engine: PolicyEngine, store: PolicyStore, accounts: sa.Table, db_state: Callable
) -> None:
    """A hook that raises undoes the hook's writes, the rows, the audit entry and the revision."""
    before, snapshot = db_state(), engine.snapshot

    def hook(session: Session) -> None:
        session.execute(accounts.insert().values(email=ALICE))
        session.flush()
        raise RuntimeError("the account could not be created")

    with pytest.raises(RuntimeError, match="could not be created"):
        engine.apply(Change.adding(Rule.of("g", ALICE, "user")), actor="t", source="web", hook=hook)
    assert db_state() == before
    assert count_accounts(store, accounts) == 0
    assert engine.snapshot is snapshot


def test_a_hook_commits_with_the_change(
    engine: PolicyEngine, store: PolicyStore, accounts: sa.Table, db_state: Callable
) -> None:
    """A hook's writes share the change's transaction."""

    def hook(session: Session) -> None:
        session.execute(accounts.insert().values(email=ALICE))

    engine.apply(Change.adding(Rule.of("g", ALICE, "user")), actor="t", source="web", hook=hook)
    assert count_accounts(store, accounts) == 1
    assert Rule.of("g", ALICE, "user") in db_state().rules


def test_a_hook_alone_is_audited_without_a_revision_bump(
    engine: PolicyEngine, store: PolicyStore, accounts: sa.Table, db_state: Callable
) -> None:
    """A hook with no row change still commits and is audited, but the policy stays put."""
    before = db_state()

    def hook(session: Session) -> None:
        session.execute(accounts.insert().values(email=ALICE))

    applied = engine.apply(Change(), actor="t", source="web", action="user.create", hook=hook)
    after = db_state()
    assert not applied.changed
    assert count_accounts(store, accounts) == 1
    assert (after.revision, after.rules) == (before.revision, before.rules)
    assert after.audit_count == before.audit_count + 1
    assert store.audit_entries(limit=1)[0].action == "user.create"


def test_listeners_hear_each_committed_revision(engine: PolicyEngine) -> None:
    """on_change listeners get the new revision; a failing one does not undo the write."""
    heard: list[int] = []

    def broken(revision: int) -> None:
        raise RuntimeError("notifier down")

    engine.on_change(broken)
    engine.on_change(heard.append)
    engine.apply(Change.adding(REPORTS), actor="t", source="cli")
    engine.apply(Change.adding(REPORTS), actor="t", source="cli")  # no-op: not announced
    engine.apply(Change.removing(REPORTS), actor="t", source="cli")
    assert heard == [2, 3]
    assert engine.revision == 3


def test_refresh_picks_up_another_instances_write(
    engine: PolicyEngine, other_engine: PolicyEngine
) -> None:
    """refresh() reloads after a second engine on the same database wrote."""
    assert engine.refresh() is False
    other_engine.apply(Change.adding(REPORTS), actor="t", source="api")
    assert not engine.decide("user", "/reports/1", "GET").allowed
    assert engine.refresh() is True
    assert engine.revision == 2
    assert engine.decide("user", "/reports/1", "GET").allowed
    assert engine.refresh() is False


def test_refresh_on_an_unreachable_database(engine: PolicyEngine, tmp_path: Path) -> None:
    """refresh() raises EngineUnavailable and keeps the snapshot it has."""
    snapshot = engine.snapshot
    engine.store = unreachable_store(tmp_path)
    with pytest.raises(EngineUnavailable):
        engine.refresh()
    assert engine.snapshot is snapshot


def test_a_write_on_a_stale_engine_builds_on_the_stored_rows(
    engine: PolicyEngine, other_engine: PolicyEngine, db_state: Callable
) -> None:
    """An engine behind the database writes on top of what is stored, losing nothing."""
    other_engine.apply(Change.adding(REPORTS), actor="t", source="api")
    extra = Rule.of("g", ALICE, "user")
    applied = engine.apply(Change.adding(extra, REPORTS), actor="t", source="cli")
    assert applied.added == (extra,)
    assert applied.revision == 3
    assert {REPORTS, extra} <= set(db_state().rules)
    assert engine.decide("user", "/reports/1", "GET").allowed
    assert engine.decide(ALICE, "/", "GET").allowed


def test_a_write_to_an_unreachable_database(engine: PolicyEngine, tmp_path: Path) -> None:
    """A write that cannot reach the database raises EngineUnavailable; the snapshot stays."""
    snapshot = engine.snapshot
    engine.store = unreachable_store(tmp_path)
    with pytest.raises(EngineUnavailable):
        engine.apply(Change.adding(REPORTS), actor="t", source="cli")
    assert engine.snapshot is snapshot


def test_a_stored_row_that_cannot_be_evaluated_fails_closed(
    model: PolicyModel, store: PolicyStore
) -> None:
    """A broken allow row written around the engine is skipped (never allowed) and listed."""
    with store.transaction() as session:
        store.insert_rules(session, [Rule.of("p", "user", "/x", "GET|(", "allow"), HOME])
    engine = PolicyEngine(model, store)
    engine.load()
    assert not engine.decide("user", "/x", "GET").allowed
    [bad] = engine.bad_rows
    assert bad.reason.startswith("act: ") and "GET|(" in bad.reason
    assert engine.decide("user", "/", "GET").allowed


def test_another_model_of_the_same_request_shape(store: PolicyStore, data_dir: Path) -> None:
    """The engine works with a replacement model: no roles, keyMatch, exact methods."""
    variant = PolicyModel.from_file(data_dir / "model_keymatch_no_roles.conf")
    engine = PolicyEngine(variant, store)
    engine.load()
    rule = Rule.of("p", "user", "/a/*", "GET")
    applied = engine.apply(Change.adding(rule), actor="t", source="cli")
    assert applied.added == (rule,)
    assert engine.decide("user", "/a/b", "GET").rule == rule
    assert not engine.decide("user", "/a/b", "POST").allowed
    assert not engine.decide("admin", "/a/b", "GET").allowed
    with pytest.raises(RuleError):
        engine.apply(
            Change.adding(Rule.of("g", "alice@example.com", "admin")), actor="t", source="cli"
        )


# -- the audit log ---------------------------------------------------------------------


def test_audit_entries_newest_first_and_filtered_by_actor(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """The audit log lists every write, newest first, and filters by actor."""
    engine.apply(Change.adding(REPORTS), actor="ops@example.com", source="api")
    engine.apply(Change.removing(REPORTS), actor="root", source="cli")
    entries = store.audit_entries()
    assert [(e.actor, e.revision) for e in entries] == [
        ("root", 3),
        ("ops@example.com", 2),
        ("test", 1),
    ]
    assert [e.revision for e in store.audit_entries(actor="ops@example.com")] == [2]
    assert [e.revision for e in store.audit_entries(limit=1, offset=1)] == [2]


def test_audit_time_filter_honours_time_zones(engine: PolicyEngine, store: PolicyStore) -> None:
    """`since` means the same instant whatever zone it is written in."""
    first = store.audit_entries()[-1]
    plus_five = dt.timezone(dt.timedelta(hours=5))
    a_minute_before = (first.at - dt.timedelta(minutes=1)).replace(tzinfo=dt.UTC)
    assert len(store.audit_entries(since=a_minute_before)) == 1
    assert len(store.audit_entries(since=a_minute_before.astimezone(plus_five))) == 1


@pytest.mark.parametrize(
    ("rows", "cycle"),
    [
        ([Rule.of("g", "anonymous", "admin")], "anonymous -> admin -> user -> anonymous"),
        ([Rule.of("g", "anonymous", "user")], "anonymous -> user -> anonymous"),
        (
            [Rule.of("g", "a", "b"), Rule.of("g", "b", "c"), Rule.of("g", "c", "a")],
            "-> a",
        ),
    ],
)
def test_a_change_that_makes_an_inheritance_cycle_is_refused(
    engine: PolicyEngine, db_state: Callable, rows: list[Rule], cycle: str
) -> None:
    """A cycle would hand every member of it every role in it; nothing is written."""
    before = db_state()
    with pytest.raises(RuleError, match="inheritance cycle") as info:
        engine.apply(Change(add=tuple(rows)), actor="t", source="cli")
    assert cycle in str(info.value)
    assert db_state() == before
    assert not engine.decide("anonymous", "/admin/", "GET").allowed


# -- a database restored from a backup ---------------------------------------------------

KPI = Rule.of("p", "user", "/kpi", "GET", "allow")
REPORTS_ROW = REPORTS


def restore(store: PolicyStore, revision: int, drop: Rule) -> None:
    """Put the database back as a backup of ``revision`` would: that number, without ``drop``."""
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM casbin_rule WHERE ptype = :p AND v0 = :v0 AND v1 = :v1"),
            {"p": drop.ptype, "v0": drop.values[0], "v1": drop.values[1]},
        )
        conn.execute(sa.text("UPDATE policy_revision SET revision = :r"), {"r": revision})


def test_a_database_restored_to_an_older_revision_is_taken(
    engine: PolicyEngine, store: PolicyStore, caplog: pytest.LogCaptureFixture
) -> None:
    engine.apply(Change.adding(REPORTS), actor="t", source="api")
    assert engine.revision == 2 and engine.decide("user", "/reports/q3", "GET").allowed

    restore(store, 1, REPORTS)
    assert engine.refresh() is True
    assert engine.revision == 1
    # The restored rows decide, not the ones this instance remembered.
    assert not engine.decide("user", "/reports/q3", "GET").allowed
    assert "older than this instance's 2" in caplog.text
    # Taken once: the next poll finds nothing to do (it used to reload on every poll).
    assert engine.refresh() is False
    # And writing on from the restored revision works.
    applied = engine.apply(Change.adding(REPORTS), actor="t", source="api")
    assert applied.revision == 2 and engine.decide("user", "/reports/q3", "GET").allowed


def test_a_write_of_another_instance_after_a_restore_is_taken(
    engine: PolicyEngine, other_engine: PolicyEngine, store: PolicyStore
) -> None:
    engine.apply(Change.adding(REPORTS), actor="t", source="api")
    engine.apply(Change.adding(KPI), actor="t", source="api")  # revision 3 here
    restore(store, 1, REPORTS)
    restore(store, 1, KPI)
    # Another instance writes on the restored database: revision 2, lower than ours.
    other_engine.apply(Change.adding(KPI), actor="t", source="api")
    assert engine.refresh() is True
    assert engine.revision == 2
    assert engine.decide("user", "/kpi", "GET").allowed
    assert not engine.decide("user", "/reports/q3", "GET").allowed


def test_a_slow_reload_never_undoes_a_newer_write_of_this_instance(
    engine: PolicyEngine, store: PolicyStore, model: PolicyModel
) -> None:
    from authz.snapshot import Snapshot

    # A reload read revision 1, then this instance committed revision 2 before it swapped.
    since = engine._generation
    revision, rules, ids = store.load_rows()
    stale = Snapshot.stored(revision, rules, ids, model)
    engine.apply(Change.adding(REPORTS), actor="t", source="api")
    assert engine._swap(stale, since=since) is False
    assert engine.revision == 2 and engine.decide("user", "/reports/q3", "GET").allowed


# -- driver errors -----------------------------------------------------------------------


def test_a_driver_error_from_the_raw_read_is_unavailable_not_a_crash(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """The rules are read with the driver's own cursor: its errors are mapped too."""
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE casbin_rule RENAME TO casbin_rule_away"))
        conn.execute(sa.text("UPDATE policy_revision SET revision = revision + 1"))
    with pytest.raises(EngineUnavailable, match="OperationalError: no such table: casbin_rule"):
        engine.refresh()
    with pytest.raises(EngineUnavailable, match="no such table"):
        engine.load()
    # The loaded snapshot keeps deciding; the rows come back and are read again.
    assert engine.decide("admin", "/admin/", "GET").allowed
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE casbin_rule_away RENAME TO casbin_rule"))
    assert engine.refresh() is True and engine.revision == 2


# -- large changes are staged ------------------------------------------------------------


def many(n: int, prefix: str = "/bulk") -> list[Rule]:
    return [Rule.of("p", f"role{i % 7}", f"{prefix}/{i}/*", "GET", "allow") for i in range(n)]


def stored_rules(store: PolicyStore) -> list[Rule]:
    return store.load()[1]


def during_staging(store: PolicyStore, action: Callable[[], None]) -> list[bool]:
    """Run ``action`` once, while a large change fills its staging table (no lock held).

    Return a list that grows by one item each time the staging table is filled.
    """
    fired: list[bool] = []

    def before(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "CREATE TEMPORARY TABLE authz_stage_add" in statement:
            fired.append(True)
            if len(fired) == 1:
                action()

    sa.event.listen(store.engine, "before_cursor_execute", before)
    return fired


def test_a_large_change_is_staged_and_applied_as_one_revision(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable
) -> None:
    from authz.engine import STAGE_FROM

    before = db_state()
    rows = many(STAGE_FROM + 200)
    applied = engine.apply(
        Change(add=tuple(rows), remove=(HOME,)), actor="t", source="cli", action="policy.load"
    )
    after = db_state()
    assert applied.revision == before.revision + 1 and after.revision == applied.revision
    assert len(applied.added) == len(rows) and applied.removed == (HOME,)
    assert after.audit_count == before.audit_count + 1
    assert sorted(stored_rules(store)) == sorted(engine.rules())
    assert HOME not in engine.rules() and engine.decide("role3", "/bulk/3/x", "GET").allowed
    # Stored in the order given (after the rows already there), as a small change would.
    tail = stored_rules(store)[-len(rows) :]
    assert tail == rows
    with store.engine.connect() as conn:  # the staging tables are gone with the change
        names = sa.inspect(conn).get_temp_table_names()
    assert not [n for n in names if n.startswith("authz_stage")]


def test_a_write_committed_while_a_large_change_is_staged_is_kept(
    engine: PolicyEngine, other_engine: PolicyEngine, store: PolicyStore, model: PolicyModel
) -> None:
    from authz.engine import STAGE_FROM

    rows = many(STAGE_FROM)
    both = rows[5]  # the editor adds one row the load adds too
    own = Rule.of("p", "user", "/editor", "GET", "allow")

    def editor() -> None:
        # Not blocked: staging takes no lock another writer waits for.
        other_engine.apply(Change(add=(both, own), remove=(REPORTS_ROW,)), actor="ed", source="api")

    engine.apply(Change.adding(REPORTS_ROW), actor="t", source="api")
    other_engine.refresh()
    fills = during_staging(store, editor)
    applied = engine.apply(
        Change(add=tuple(rows), remove=(HOME,)), actor="t", source="cli", action="policy.load"
    )
    assert applied.revision == 4  # the editor's 3, then the load's
    stored = stored_rules(store)
    assert len(stored) == len(set(stored)), "a row was stored twice"
    assert own in stored and both in stored and REPORTS_ROW not in stored and HOME not in stored
    assert set(rows) <= set(stored)
    assert sorted(stored) == sorted(engine.rules()) and engine.revision == 4
    assert both not in applied.added  # the editor had added it already
    assert len(fills) == 1  # rebased on the editor's change, not staged all over again
    # A fresh load agrees with the snapshot the write swapped in.
    fresh = PolicyEngine(model, store)
    fresh.load()
    assert sorted(fresh.rules()) == sorted(engine.rules())


def test_rows_changed_behind_the_engine_while_staging_are_planned_again(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    from authz.engine import STAGE_FROM

    rows = many(STAGE_FROM)
    sneaky = Rule.of("p", "user", "/sneaky", "GET", "allow")

    def raw_write() -> None:
        # No audit entry: the change in between cannot be read, only the rows can.
        with store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) "
                    "VALUES ('p', 'user', '/sneaky', 'GET', 'allow')"
                )
            )
            conn.execute(sa.text("UPDATE policy_revision SET revision = revision + 1"))

    fills = during_staging(store, raw_write)
    applied = engine.apply(Change(add=tuple(rows)), actor="t", source="cli")
    assert applied.revision == 3 and len(fills) == 2
    stored = stored_rules(store)
    assert sneaky in stored and set(rows) <= set(stored) and len(stored) == len(set(stored))
    assert sorted(stored) == sorted(engine.rules())


def test_a_large_change_keeps_the_lockout_guard(
    model: PolicyModel, store: PolicyStore, default_rules: tuple[Rule, ...]
) -> None:
    from authz.engine import STAGE_FROM
    from authz.errors import LockoutRefused
    from authz.guards import LockoutGuard

    guarded = PolicyEngine(
        model,
        store,
        guard=LockoutGuard(path="/admin/", method="GET"),
        active_subjects=lambda _session: [ALICE],
    )
    guarded.load()
    admin_link = Rule.of("g", ALICE, "admin")
    guarded.apply(Change.adding(*default_rules, admin_link), actor="t", source="cli")
    revision = guarded.revision
    with pytest.raises(LockoutRefused):
        guarded.apply(
            Change(add=tuple(many(STAGE_FROM)), remove=(admin_link,)), actor="t", source="cli"
        )
    assert guarded.revision == revision == store.revision()
    assert admin_link in stored_rules(store) and len(stored_rules(store)) == len(guarded.rules())
