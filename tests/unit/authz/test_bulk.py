"""Bulk writes and streamed reads of rule rows: COPY (PostgreSQL) and executemany batches
(SQLite) keep every value exactly; a streamed export writes what ``csvio.export`` writes.

tests/postgres/test_bulk.py runs these same tests on PostgreSQL.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from authz import csvio
from authz import store as store_module
from authz.engine import STAGE_FROM
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.errors import RuleError
from authz.rules import Rule
from authz.store import VALUE_COLUMNS
from authz.store import PolicyStore
from authz.store import bulk_insert
from authz.store import rule_table

#: Values COPY's text format escapes or treats specially, and SQL NULL beside "".
TRICKY: list[tuple[str | None, ...]] = [
    ("p", "a,b", 'say "hi"', "back\\slash", "allow", None, None),
    ("p", "tab\there", "new\nline", "carriage\rreturn", "deny", None, None),
    ("p", "\\N", "\\.", "", "allow", None, None),  # COPY's NULL marker and end marker as text
    ("p", "ünïcødé ✓", "中文/路径", "emoji 🎉", "allow", None, None),
    ("g", "", None, "", None, "", None),  # empty strings and NULLs in between
    ("g", None, None, None, None, None, None),
    ("p", "   spaces  ", "#hash", "'single'", "a\x01b", "v4", "v5"),
]


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    """Batches of 3 rows, so a few rows cross several batch boundaries."""
    monkeypatch.setattr(store_module, "STAGE_BATCH", 3)
    monkeypatch.setattr(store_module, "STAGE_MOVE", 3)
    return 3


def stored_columns(store: PolicyStore) -> list[tuple[str | None, ...]]:
    columns = [rule_table.c.ptype, *(rule_table.c[c] for c in VALUE_COLUMNS)]
    with store.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(*columns).order_by(rule_table.c.id))]


def test_bulk_insert_keeps_every_value_null_and_empty_string(
    store: PolicyStore, small_batches: int
) -> None:
    rows = TRICKY * 2  # 14 rows: five batches of at most 3
    with store.engine.connect() as conn:
        count = bulk_insert(conn, rule_table.name, ["ptype", *VALUE_COLUMNS], iter(rows))
    assert count == len(rows)
    assert stored_columns(store) == rows


def test_bulk_insert_of_no_rows_writes_nothing(store: PolicyStore) -> None:
    with store.engine.connect() as conn:
        assert bulk_insert(conn, rule_table.name, ["ptype", *VALUE_COLUMNS], iter([])) == 0
    assert stored_columns(store) == []


def many(n: int) -> list[Rule]:
    return [Rule.of("p", f"role{i % 7}", f"/bulk/{i}/*", "GET", "allow") for i in range(n)]


def test_a_staged_change_across_batch_boundaries_keeps_every_row_in_order(
    engine: PolicyEngine, store: PolicyStore, small_batches: int, default_rules: tuple[Rule, ...]
) -> None:
    rows = many(STAGE_FROM + 5)
    gone = default_rules[:4]
    applied = engine.apply(
        Change(add=tuple(rows), remove=gone), actor="t", source="cli", action="policy.load"
    )
    assert applied.added == tuple(rows) and applied.removed == gone
    revision, stored = store.load()
    assert revision == applied.revision == 2  # one revision for the whole change
    assert stored == [r for r in default_rules if r not in gone] + rows
    entry = store.audit_entries(limit=1)[0]
    assert entry.added == tuple(rows) and entry.removed == gone


def test_a_refused_staged_change_writes_nothing(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable[[], object]
) -> None:
    before = db_state()
    cycle = (Rule.of("g", "user", "admin"),)  # admin inherits user: user -> admin closes it
    with pytest.raises(RuleError, match="inheritance cycle"):
        engine.apply(Change(add=(*many(STAGE_FROM), *cycle)), actor="t", source="cli")
    assert db_state() == before


def tricky_policy() -> list[Rule]:
    """Valid rows with values the CSV quotes or escapes, p and g rows interleaved."""
    return [
        Rule.of("g", "alice@example.com", "team-one"),
        Rule.of("p", "team-one", "/a,b/*", "GET", "allow"),
        Rule.of("p", "user", '/say/"hi"', "GET|POST", "deny"),
        Rule.of("g", "token:deploy", "user"),
        Rule.of("p", "user", "/ünï/:name", ".*", "allow"),
        Rule.of("p", "user", "/q\\+/x y", "GET", "allow"),
        Rule.of("g", "team-one", "user"),
    ]


def test_a_streamed_export_writes_the_same_bytes_as_the_snapshots(
    engine: PolicyEngine, store: PolicyStore, small_batches: int
) -> None:
    engine.apply(Change(add=tuple(tricky_policy())), actor="t", source="cli")
    out = io.StringIO()
    written = csvio.write(store.stream_rules(csvio.ptype_order, batch=2), out, chunk=2)
    assert out.getvalue() == csvio.export(engine.rules())
    assert written == len(engine.rules())
    assert csvio.parse(out.getvalue(), engine.model).rules == tuple(
        sorted(engine.rules(), key=csvio.export_order)
    )


@pytest.mark.parametrize("collide", [False, True], ids=["hashes", "every-hash-collides"])
def test_a_streamed_read_gives_a_row_stored_twice_once_at_its_first_place(
    store: PolicyStore, monkeypatch: pytest.MonkeyPatch, collide: bool
) -> None:
    if collide:  # rows with equal hashes but different values are all written
        monkeypatch.setattr(store_module, "hash", lambda _row: 0, raising=False)
    a = ("p", "user", "/a", "GET", "allow", None, None)
    b = ("p", "user", "/b", "GET", "allow", None, None)
    g = ("g", "x@example.com", "user", None, None, None, None)
    n = ("p", "user", "/n", "GET", "allow", None, "")  # NULL and "" are not the same
    m = ("p", "user", "/n", "GET", "allow", "", None)
    with store.engine.connect() as conn:
        bulk_insert(conn, rule_table.name, ["ptype", *VALUE_COLUMNS], [g, a, b, a, n, m, n, g])
    streamed = list(store.stream_rules(csvio.ptype_order, batch=1))
    assert streamed == [
        Rule.of("p", "user", "/a", "GET", "allow"),
        Rule.of("p", "user", "/b", "GET", "allow"),
        Rule("p", ("user", "/n", "GET", "allow", None, "")),  # type: ignore[arg-type]
        Rule.of("p", "user", "/n", "GET", "allow", ""),
        Rule.of("g", "x@example.com", "user"),
    ]
