"""The change log: each write logs its rows; an instance behind applies them in order.

A full load stays the answer whenever the log cannot be trusted to bring an instance up
to date: a gap, a revision without an entry, a large change logged as a marker, a row the
write path refuses, a database restored from a backup, a row count that disagrees.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import random
import shutil
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import authz.engine
from authz import store as store_module
from authz.engine import STAGE_FROM
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.model import PolicyModel
from authz.rules import Rule
from authz.store import PolicyStore
from authz.store import change_table

REPORTS = Rule.of("p", "user", "/reports/*", "GET", "allow")
KPI = Rule.of("p", "user", "/kpi", "GET", "allow")
DENY_KPI = Rule.of("p", "user", "/kpi", "GET", "deny")
REQUESTS = [
    ("user", "/reports/q3", "GET"),
    ("user", "/kpi", "GET"),
    ("anonymous", "/login", "GET"),
    ("admin", "/admin/x", "POST"),
]


def entries(store: PolicyStore) -> dict[int, dict[str, object]]:
    """Every change-log entry by revision."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(change_table).order_by(change_table.c.revision))
        return {row.revision: dict(row._mapping) for row in rows}


def fresh(model: PolicyModel, store: PolicyStore) -> PolicyEngine:
    """An instance that reads every row now."""
    loaded = PolicyEngine(model, store)
    loaded.load()
    return loaded


def assert_same(engine: PolicyEngine, model: PolicyModel, store: PolicyStore) -> None:
    """The engine holds what a full load of the database gives, and decides alike."""
    full = fresh(model, store)
    assert engine.revision == full.revision
    assert sorted(engine.rules()) == sorted(full.rules())
    assert sorted(engine.bad_rows) == sorted(full.bad_rows)
    for request in REQUESTS:
        assert engine.decide(*request).allowed == full.decide(*request).allowed, request


def raw(store: PolicyStore, *statements: str) -> None:
    with store.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


@pytest.fixture
def loads(engine: PolicyEngine) -> Iterator[list[int]]:
    """Counts the engine's full loads."""
    counted: list[int] = []
    original = engine.load

    def load() -> None:
        counted.append(1)
        original()

    engine.load = load  # type: ignore[method-assign]
    yield counted


# -- what a write logs -----------------------------------------------------------------


def test_each_write_logs_its_rows_its_row_count_and_a_chain(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    engine.apply(Change.adding(REPORTS, KPI), actor="t", source="api")
    engine.apply(Change(add=(DENY_KPI,), remove=(KPI,)), actor="t", source="api")
    log = entries(store)
    assert sorted(log) == [1, 2, 3]
    assert json.loads(str(log[2]["added"])) == [REPORTS.as_list(), KPI.as_list()]
    assert json.loads(str(log[3]["added"])) == [DENY_KPI.as_list()]
    assert json.loads(str(log[3]["removed"])) == [KPI.as_list()]
    assert log[3]["row_count"] == len(engine.rules())
    assert log[2]["parent"] == log[1]["token"] and log[3]["parent"] == log[2]["token"]
    assert len({log[r]["token"] for r in log}) == 3


def test_a_write_that_changes_nothing_logs_nothing(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    before = entries(store)
    engine.apply(Change.removing(KPI), actor="t", source="api")  # absent: nothing removed
    assert entries(store) == before


def test_a_failed_write_leaves_no_entry(engine: PolicyEngine, store: PolicyStore) -> None:
    before = entries(store)

    def hook(_session: object) -> None:
        raise RuntimeError("the account row could not be written")

    with pytest.raises(RuntimeError):
        engine.apply(Change.adding(KPI), actor="t", source="api", hook=hook)  # type: ignore[arg-type]
    assert entries(store) == before and store.revision() == engine.revision


# -- an instance behind applies the entries --------------------------------------------


def test_increments_are_applied_in_order(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    model: PolicyModel,
    store: PolicyStore,
    loads: list[int],
) -> None:
    other_engine.apply(Change.adding(KPI), actor="t", source="api")
    other_engine.apply(Change(add=(DENY_KPI, REPORTS), remove=(KPI,)), actor="t", source="api")
    other_engine.apply(Change.removing(DENY_KPI), actor="t", source="api")
    other_engine.apply(Change.adding(KPI), actor="t", source="api")
    assert engine.refresh() is True
    assert loads == [] and engine.refreshes == {"incremental": 1, "full": 0}
    assert engine.decide("user", "/kpi", "GET").allowed  # the deny came and went
    assert engine.decide("user", "/reports/q3", "GET").allowed
    assert_same(engine, model, store)
    assert engine.refresh() is False


def test_a_write_behind_another_instance_applies_its_changes_not_a_load(
    engine: PolicyEngine, other_engine: PolicyEngine, store: PolicyStore, model: PolicyModel
) -> None:
    other_engine.apply(Change.adding(REPORTS), actor="t", source="api")
    read: list[int] = []
    original = store.read_rows

    def read_rows(conn: object) -> object:
        read.append(1)
        return original(conn)  # type: ignore[arg-type]

    store.read_rows = read_rows  # type: ignore[method-assign]
    store.load_rows = lambda: pytest.fail("a full read")  # type: ignore[method-assign]
    engine.apply(Change.adding(KPI), actor="t", source="api")
    assert read == []
    del store.read_rows, store.load_rows
    assert engine.revision == 3
    assert_same(engine, model, store)
    assert other_engine.refresh() is True and other_engine.refreshes["incremental"] == 1
    assert_same(other_engine, model, store)


def test_catch_up_before_a_large_write_applies_the_log(
    engine: PolicyEngine, other_engine: PolicyEngine, loads: list[int]
) -> None:
    other_engine.apply(Change.adding(REPORTS), actor="t", source="api")
    engine.preview(Change.adding(KPI))  # catches up first, outside any lock
    assert loads == [] and engine.revision == 2 and engine.refreshes["incremental"] == 1


# -- and falls back to a full load when the log cannot be followed ---------------------


def test_a_pruned_entry_makes_a_full_load(
    engine: PolicyEngine, other_engine: PolicyEngine, store: PolicyStore, model: PolicyModel
) -> None:
    other_engine.apply(Change.adding(REPORTS), actor="t", source="api")
    other_engine.apply(Change.adding(KPI), actor="t", source="api")
    raw(store, "DELETE FROM policy_change WHERE revision = 2")
    assert engine.refresh() is True
    assert engine.refreshes == {"incremental": 0, "full": 1}
    assert_same(engine, model, store)


def test_a_revision_written_without_an_entry_makes_a_full_load(
    engine: PolicyEngine, store: PolicyStore, model: PolicyModel
) -> None:
    # As a release without the change log (or a hand edit) writes: rows and revision only.
    raw(
        store,
        "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) VALUES ('p','user','/kpi','GET','allow')",
        "UPDATE policy_revision SET revision = revision + 1",
    )
    assert engine.refresh() is True
    assert engine.refreshes == {"incremental": 0, "full": 1}
    assert engine.decide("user", "/kpi", "GET").allowed
    assert_same(engine, model, store)


def test_a_large_change_is_logged_as_a_marker_and_makes_a_full_load(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    store: PolicyStore,
    model: PolicyModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "LOG_ROWS", 2)
    other_engine.apply(Change.adding(REPORTS, KPI, DENY_KPI), actor="t", source="cli")
    marker = entries(store)[2]
    assert marker["complete"] is False or marker["complete"] == 0
    assert marker["added"] == "[]" and marker["size"] == 3
    assert marker["row_count"] == len(other_engine.rules())
    assert engine.refresh() is True and engine.refreshes["full"] == 1
    assert_same(engine, model, store)
    # The next small change follows the marker's entry again.
    other_engine.apply(Change.removing(DENY_KPI), actor="t", source="api")
    assert engine.refresh() is True and engine.refreshes["incremental"] == 1
    assert_same(engine, model, store)


def test_too_many_rows_behind_makes_a_full_load(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    store: PolicyStore,
    model: PolicyModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("authz.engine.CATCH_UP_ROWS", 2)
    other_engine.apply(Change.adding(REPORTS, KPI), actor="t", source="api")
    other_engine.apply(Change.adding(DENY_KPI), actor="t", source="api")
    assert engine.refresh() is True and engine.refreshes == {"incremental": 0, "full": 1}
    assert_same(engine, model, store)


def test_too_many_revisions_behind_makes_a_full_load(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    store: PolicyStore,
    model: PolicyModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("authz.engine.CATCH_UP_REVISIONS", 2)
    for rule in (REPORTS, KPI, DENY_KPI):
        other_engine.apply(Change.adding(rule), actor="t", source="api")
    assert engine.refresh() is True and engine.refreshes == {"incremental": 0, "full": 1}
    assert_same(engine, model, store)


@pytest.mark.parametrize(
    ("row", "refused"),
    [
        # One value too many on a deny row: skipping it could grant, so refused (503).
        ("('p','user','/kpi','GET','deny','x')", True),
        # A method pattern that does not compile on an allow row: skipped, reported.
        ("('p','user','/kpi','GET(','allow',NULL)", False),
    ],
)
def test_a_bad_row_in_the_log_is_judged_as_a_full_load_judges_it(
    engine: PolicyEngine, store: PolicyStore, model: PolicyModel, row: str, refused: bool
) -> None:
    # Written behind the engine's back into the rows and into the log alike.
    values = json.dumps([[v.strip("'") for v in row[1:-1].split(",") if v != "NULL"]])
    raw(
        store,
        f"INSERT INTO casbin_rule (ptype, v0, v1, v2, v3, v4) VALUES {row}",  # noqa: S608
        "UPDATE policy_revision SET revision = 2",
    )
    forged = (
        "INSERT INTO policy_change (revision, at, token, parent, row_count, size, complete, "
        "added, removed) SELECT 2, at, 'forged', token, NULL, 1, :complete, :added, '[]' "
        "FROM policy_change WHERE revision = 1"
    )
    with store.engine.begin() as conn:
        conn.execute(sa.text(forged), {"complete": True, "added": values})
    assert engine.refresh() is True
    assert engine.refreshes == {"incremental": 0, "full": 1}
    assert len(engine.bad_rows) == 1
    assert (engine.refused is not None) is refused
    if refused:
        with pytest.raises(Exception, match="refused"):
            engine.decide("user", "/kpi", "GET")
    else:
        assert_same(engine, model, store)


def test_an_unreadable_entry_makes_a_full_load(
    engine: PolicyEngine, other_engine: PolicyEngine, store: PolicyStore, model: PolicyModel
) -> None:
    other_engine.apply(Change.adding(KPI), actor="t", source="api")
    raw(store, "UPDATE policy_change SET added = '[[\"p\", 1]]' WHERE revision = 2")
    assert engine.refresh() is True and engine.refreshes["full"] == 1
    assert_same(engine, model, store)


def test_a_row_count_other_than_the_writers_makes_a_full_load(
    engine: PolicyEngine, other_engine: PolicyEngine, store: PolicyStore, model: PolicyModel
) -> None:
    # Rows changed behind the engine at revision 1 and its log entry rewritten to hide
    # it: only the count the writer saw tells this instance it holds other rows.
    other_engine.apply(Change.adding(KPI), actor="t", source="api")
    raw(
        store,
        "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) "
        "VALUES ('p','user','/hidden','GET','allow')",
        "UPDATE policy_change SET row_count = row_count + 1 WHERE revision = 2",
    )
    assert engine.refresh() is True and engine.refreshes["full"] == 1
    assert engine.decide("user", "/hidden", "GET").allowed
    assert_same(engine, model, store)


def test_a_database_restored_and_written_again_past_this_instance_makes_a_full_load(
    engine: PolicyEngine, other_engine: PolicyEngine, store: PolicyStore, model: PolicyModel
) -> None:
    engine.apply(Change.adding(REPORTS), actor="t", source="api")  # revision 2 here
    # Restored from a backup of revision 1 (the log as it was then), then written on
    # twice by another instance: revision 3 exists again, but is not what followed ours.
    raw(
        store,
        "DELETE FROM casbin_rule WHERE v1 = '/reports/*'",
        "DELETE FROM policy_change WHERE revision > 1",
        "UPDATE policy_revision SET revision = 1",
    )
    other_engine.refresh()
    other_engine.apply(Change.adding(KPI), actor="t", source="api")
    other_engine.apply(Change.adding(DENY_KPI), actor="t", source="api")
    assert store.revision() == 3
    assert engine.refresh() is True
    assert engine.refreshes == {"incremental": 0, "full": 1}
    assert not engine.decide("user", "/reports/q3", "GET").allowed
    assert_same(engine, model, store)


def test_entries_past_a_restored_revision_are_replaced(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    engine.apply(Change.adding(REPORTS), actor="t", source="api")
    engine.apply(Change.adding(KPI), actor="t", source="api")
    raw(store, "UPDATE policy_revision SET revision = 1")  # the log was not restored
    engine.refresh()
    engine.apply(Change.adding(DENY_KPI), actor="t", source="api")
    log = entries(store)
    assert sorted(log) == [1, 2]
    assert json.loads(str(log[2]["added"])) == [DENY_KPI.as_list()]


# -- pruning ---------------------------------------------------------------------------


def test_pruning_keeps_the_entries_within_the_retention(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    for rule in (REPORTS, KPI, DENY_KPI):
        engine.apply(Change.adding(rule), actor="t", source="api")
    assert sorted(entries(store)) == [1, 2, 3, 4]


def test_pruning_drops_old_entries_in_bounded_batches_but_keeps_the_latest(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    store: PolicyStore,
    model: PolicyModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for rule in (REPORTS, KPI, DENY_KPI):
        engine.apply(Change.adding(rule), actor="t", source="api")
    # Entries 1 to 4 are past the retention now.
    old = dt.datetime(2000, 1, 1)
    raw(store, f"UPDATE policy_change SET at = '{old.isoformat(sep=' ')}'")  # noqa: S608
    monkeypatch.setattr(store_module, "PRUNE_EVERY", 1)
    monkeypatch.setattr(store_module, "PRUNE_BATCH", 1)
    engine.apply(Change.removing(DENY_KPI), actor="t", source="api")  # revision 5
    assert sorted(entries(store)) == [2, 3, 4, 5]  # one at a time
    monkeypatch.setattr(store_module, "PRUNE_BATCH", 100)
    engine.apply(Change.adding(DENY_KPI), actor="t", source="api")  # revision 6
    # Entry 5 is recent; and the entry before the new one is kept whatever its age.
    assert sorted(entries(store)) == [5, 6]
    raw(store, f"UPDATE policy_change SET at = '{old.isoformat(sep=' ')}'")  # noqa: S608
    engine.apply(Change.removing(DENY_KPI), actor="t", source="api")  # revision 7
    assert sorted(entries(store)) == [6, 7]
    # other_engine, at revision 1, finds a gap: a full load.
    assert other_engine.refresh() is True and other_engine.refreshes["full"] == 1
    assert_same(other_engine, model, store)
    # Now at revision 7, it follows the log again: entry 8 chains to the kept entry 7.
    engine.apply(Change.adding(DENY_KPI), actor="t", source="api")
    assert other_engine.refresh() is True and other_engine.refreshes["incremental"] == 1
    assert_same(other_engine, model, store)


def test_pruning_runs_every_few_revisions(
    engine: PolicyEngine, store: PolicyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PRUNE_EVERY", 3)
    old = dt.datetime(2000, 1, 1)
    raw(store, f"UPDATE policy_change SET at = '{old.isoformat(sep=' ')}'")  # noqa: S608
    engine.apply(Change.adding(REPORTS), actor="t", source="api")  # revision 2: no pruning
    assert sorted(entries(store)) == [1, 2]
    engine.apply(Change.adding(KPI), actor="t", source="api")  # revision 3: prunes
    assert sorted(entries(store)) == [2, 3]


def test_the_retention_comes_from_the_store(store: PolicyStore) -> None:
    assert store.change_log_retention == dt.timedelta(days=7)
    assert PolicyStore(store.engine, change_log_days=0.5).change_log_retention == dt.timedelta(
        hours=12
    )


# -- staged (large) changes ------------------------------------------------------------


def many(n: int, prefix: str = "/bulk") -> list[Rule]:
    return [Rule.of("p", f"role{i % 7}", f"{prefix}/{i}/*", "GET", "allow") for i in range(n)]


def test_a_staged_change_logs_its_rows(
    engine: PolicyEngine, other_engine: PolicyEngine, store: PolicyStore, model: PolicyModel
) -> None:
    rows = many(STAGE_FROM)
    engine.apply(Change(add=tuple(rows), remove=(REPORTS,)), actor="t", source="cli")
    log = entries(store)
    assert json.loads(str(log[2]["added"])) == [r.as_list() for r in rows]
    assert log[2]["row_count"] == len(engine.rules())
    assert other_engine.refresh() is True and other_engine.refreshes["incremental"] == 1
    assert_same(other_engine, model, store)


def during_staging(store: PolicyStore, action: Callable[[], None]) -> None:
    """Run ``action`` once, while a large change fills its staging table (no lock held)."""
    fired: list[bool] = []

    def before(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "CREATE TEMPORARY TABLE authz_stage_add" in statement and not fired:
            fired.append(True)
            action()

    sa.event.listen(store.engine, "before_cursor_execute", before)


def test_a_rebased_staged_change_logs_what_really_changed(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    store: PolicyStore,
    model: PolicyModel,
    default_rules: tuple[Rule, ...],
) -> None:
    rows = many(STAGE_FROM)
    both = rows[5]  # the editor adds a row the load adds too
    gone = default_rules[0]  # and removes a row the load removes too

    def editor() -> None:
        other_engine.apply(Change(add=(both, KPI), remove=(gone,)), actor="ed", source="api")

    follower = fresh(model, store)
    during_staging(store, editor)
    engine.apply(Change(add=tuple(rows), remove=(gone, REPORTS)), actor="t", source="cli")
    log = entries(store)
    assert sorted(log) == [1, 2, 3]
    logged = [Rule(r[0], tuple(r[1:])) for r in json.loads(str(log[3]["added"]))]
    assert both not in logged and len(logged) == len(rows) - 1
    assert json.loads(str(log[3]["removed"])) == []  # gone was gone, REPORTS never there
    assert follower.refresh() is True and follower.refreshes == {"incremental": 1, "full": 0}
    assert_same(follower, model, store)
    assert_same(engine, model, store)


# -- the result equals a full load -----------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_increments_from_several_writers_equal_a_full_load(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    store: PolicyStore,
    model: PolicyModel,
    default_rules: tuple[Rule, ...],
    seed: int,
) -> None:
    rng = random.Random(seed)
    third = fresh(model, store)
    writers = [engine, other_engine, third]
    follower = fresh(model, store)
    pool = [
        *default_rules,
        *(
            Rule.of("p", rng.choice(["user", "admin", "anonymous"]), f"/r/{i}", "GET", "allow")
            for i in range(12)
        ),
        *(Rule.of("p", "user", f"/r/{i}", "GET", "deny") for i in range(4)),
        Rule.of("g", "auditor", "user"),
        Rule.of("g", "auditor", "admin"),
    ]
    for _step in range(40):
        writer = rng.choice(writers)
        add = tuple(rng.sample(pool, rng.randint(0, 3)))
        remove = tuple(rng.sample(pool, rng.randint(0, 3)))
        writer.apply(Change(add=add, remove=remove), actor="t", source="api")
        if rng.random() < 0.3:
            follower.refresh()
    follower.refresh()
    assert follower.refreshes["full"] == 0 and follower.refreshes["incremental"] > 0
    assert_same(follower, model, store)
    full = fresh(model, store)
    for request in [("user", f"/r/{i}", "GET") for i in range(12)]:
        assert follower.decide(*request) == full.decide(*request)


def test_threads_catching_up_at_once_read_the_rows_once(
    engine: PolicyEngine, store: PolicyStore, model: PolicyModel
) -> None:
    # A revision without an entry: catching up means reading every row.
    raw(store, "UPDATE policy_revision SET revision = revision + 1")
    reading = threading.Event()
    go = threading.Event()
    reads: list[int] = []
    original = store.load_rows

    def load_rows() -> object:
        reads.append(1)
        reading.set()
        go.wait(10)
        return original()

    store.load_rows = load_rows  # type: ignore[method-assign]
    first = threading.Thread(target=engine.refresh)  # the poll
    second = threading.Thread(target=engine.refresh)  # the listener, woken at once
    first.start()
    assert reading.wait(10)
    second.start()
    time.sleep(0.1)  # let it reach the lock (if it is later, it finds nothing to do)
    go.set()
    first.join(10)
    second.join(10)
    assert reads == [1]
    assert engine.revision == store.revision()
    assert_same(engine, model, store)


def test_a_full_load_freezes_the_collector_only_when_asked(
    model: PolicyModel, store: PolicyStore
) -> None:
    writer = PolicyEngine(model, store)
    writer.load()
    writer.apply(Change.adding(KPI), actor="t", source="cli")  # a policy the index decides
    gc.unfreeze()
    try:
        PolicyEngine(model, store).load()
        assert gc.get_freeze_count() == 0
        PolicyEngine(model, store, freeze_gc=True).load()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of this test process collects as before


def test_a_staged_write_keeps_its_own_change_log_token(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """The next catch-up checks the chain from the writer's own revision on."""
    engine.apply(Change(add=tuple(many(STAGE_FROM))), actor="t", source="cli")
    assert engine._token(engine.snapshot) == store.change_token_of(engine.revision)


def test_a_database_restored_and_written_to_the_same_revision_is_read_again(
    model: PolicyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restored from a backup, then written as many times as it lost: the revision number
    is the one this instance holds, but the entry of that revision is another write's."""
    monkeypatch.setattr(authz.engine, "REWRITE_CHECK_EVERY", 0.0)  # at every poll

    def open_store() -> PolicyStore:
        path = tmp_path / "policy.db"
        return PolicyStore(sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool))

    writer = PolicyEngine(model, open_store())
    writer.store.create_schema()
    writer.load()
    writer.apply(Change.adding(Rule.of("g", "a@example.com", "admin")), actor="t", source="cli")
    shutil.copy(tmp_path / "policy.db", tmp_path / "backup.db")
    writer.apply(Change.removing(Rule.of("g", "a@example.com", "admin")), actor="t", source="cli")
    follower = PolicyEngine(model, open_store())
    follower.load()
    assert Rule.of("g", "a@example.com", "admin") not in follower.snapshot.ruleset
    shutil.copy(tmp_path / "backup.db", tmp_path / "policy.db")  # the restore
    again = PolicyEngine(model, open_store())
    again.load()
    again.apply(Change.adding(Rule.of("p", "ops", "/ops", "GET", "allow")), actor="t", source="cli")
    assert follower.revision == again.revision  # same number, other rows
    assert follower.refresh() is True
    assert sorted(follower.rules()) == sorted(again.rules())
    assert Rule.of("g", "a@example.com", "admin") in follower.snapshot.ruleset  # as stored
    assert follower.refresh() is False  # and then quiet again
