"""authz.views: every listing, lookup and search agrees with a plain scan of the rows,
on a fresh snapshot and on snapshots derived from it change by change (the overlay), also
across a compaction into a new base."""

from __future__ import annotations

import random

import pytest

from authz import views
from authz.model import PolicyModel
from authz.rules import Rule
from authz.snapshot import Snapshot
from tests.unit.authz.conftest import REPO

MODEL = PolicyModel.from_file(REPO / "model.conf")


def initial_rows() -> list[Rule]:
    rows = [Rule.of("p", f"team{t}", f"/teams/{t}/*", "GET", "allow") for t in range(5)]
    for u in range(60):
        email = f"user{u}@example.com"
        rows.append(Rule.of("p", email, f"/users/{u}/docs/{u % 3}", "GET|POST", "allow"))
        rows.append(Rule.of("p", email, f"/users/{u}/files/:name", "GET", "allow"))
        rows.append(Rule.of("g", email, f"team{u % 5}"))
    rows.append(Rule.of("g", "team1", "team0"))
    rows.append(Rule.of("p", "team3", "/teams/secret", "GET", "deny"))
    return rows


def scan(snapshot: Snapshot, ptype: str) -> list[Rule]:
    return [r for r in snapshot.rules if r.ptype == ptype]


def check(snapshot: Snapshot) -> None:
    """Every read of the view equals the same read done by scanning the rows."""
    view = views.view(snapshot)
    for ptype in ("p", "g"):
        rows = scan(snapshot, ptype)
        assert view.count(ptype) == len(rows)
        for offset, limit in ((0, 7), (5, 11), (len(rows) - 3, 10), (len(rows) + 2, 5)):
            assert view.page(ptype, max(0, offset), limit) == rows[max(0, offset) :][:limit]
    p_rows, g_rows = scan(snapshot, "p"), scan(snapshot, "g")
    for subject in ("team1", "user7@example.com", "user59@example.com", "nobody"):
        assert view.rules_of(subject) == [r for r in p_rows if r.values[0] == subject]
        assert view.links_of(subject) == [r for r in g_rows if r.values[0] == subject]
    both = ("team0", "user3@example.com", "team4")
    assert view.rules_of(*both) == [r for r in p_rows if r.values[0] in both]
    for role in ("team0", "team1", "team4", "ghost"):
        members = [r for r in g_rows if r.values[1] == role]
        assert view.links_to(role) == members
        assert view.member_count(role) == len(members)
    for q in ("docs/2", "USERS/1".lower(), "deny", "zzz", "get|post", "\x1f"):
        expected = [r for r in p_rows if any(q in v.lower() for v in r.values)]
        total, page = view.search(q, 3, 8)
        assert (total, page) == (len(expected), expected[3:11])
    for effect in ("allow", "deny", "other"):
        expected = [r for r in p_rows if r.values[3] == effect]
        for offset in (0, 4, len(expected) - 2):
            total, page = view.with_effect(3, effect, max(0, offset), 9)
            assert (total, page) == (len(expected), expected[max(0, offset) :][:9])
    for rule in [*snapshot.rules[:5], *snapshot.rules[-5:]]:
        assert view.find(rule.id) == rule
    assert view.find(Rule.of("p", "x", "/gone", "GET", "allow").id) is None
    assert view.find("not an id") is None


def test_a_fresh_snapshot_reads_as_a_scan() -> None:
    check(Snapshot.of(1, initial_rows(), MODEL))


def test_snapshots_derived_change_by_change_read_as_a_scan() -> None:
    """Adds, removals and a row removed then added again (it moves to the end)."""
    snapshot = Snapshot.of(1, initial_rows(), MODEL)
    check(snapshot)  # the base's indexes, built before the changes
    rng = random.Random(12)
    for step in range(40):
        current = list(snapshot.rules)
        remove = rng.sample(current, 2)
        effect = "deny" if step % 3 == 0 else "allow"
        add = [Rule.of("p", f"team{step % 5}", f"/extra/{step}", "GET", effect)]
        if step % 4 == 0:
            add.append(Rule.of("g", f"new{step}@example.com", "team2"))
        if step % 7 == 0:
            add.append(remove[0])  # out and in again: now last
        snapshot = snapshot.with_changes(snapshot.revision + 1, add, remove)
        check(snapshot)


def test_a_removed_row_is_found_by_id_no_more() -> None:
    snapshot = Snapshot.of(1, initial_rows(), MODEL)
    gone = snapshot.rules[3]
    assert views.view(snapshot).find(gone.id) == gone
    after = snapshot.with_changes(2, [], [gone])
    assert views.view(after).find(gone.id) is None
    assert views.view(snapshot).find(gone.id) == gone  # the old snapshot is unchanged


def test_a_compaction_starts_a_new_base_that_reads_the_same() -> None:
    snapshot = Snapshot.of(1, initial_rows(), MODEL)
    first = views.view(snapshot).base
    many = [Rule.of("p", "bulk", f"/bulk/{i}", "GET", "allow") for i in range(400)]
    snapshot = snapshot.with_changes(2, many, [])
    assert views.view(snapshot).base is not first
    check(snapshot)


@pytest.mark.parametrize(
    ("kind", "pattern", "value"),
    [
        ("keyMatch2", "/users/1/files/:name", "/users/1/files/a.pdf"),
        ("keyMatch2", "/a/*", "/a/b/c"),
        ("keyMatch2", "/static/x.css", "/static/xAcss"),  # "." is any character
        ("regexMatch", "/ab?c", "/ac"),  # the character before a "?" may be absent
        ("regexMatch", "/x|/y", "/y"),  # an alternative may begin anywhere
        ("keyMatch", "/reports*", "/reports/1"),
        ("eq", "/exact", "/exact"),
    ],
)
def test_a_literal_start_begins_every_value_its_pattern_accepts(
    kind: str, pattern: str, value: str
) -> None:
    assert value.startswith(views.literal_start(kind, pattern))


def test_rules_matching_a_path_are_those_a_scan_finds() -> None:
    from authz.index import compile_predicate

    snapshot = Snapshot.of(1, initial_rows(), MODEL)
    snapshot = snapshot.with_changes(
        2, [Rule.of("p", "team2", "/*", "GET", "allow")], [snapshot.rules[1]]
    )
    view = views.view(snapshot)

    def match(value: str, pattern: str) -> bool:
        return compile_predicate("keyMatch2", pattern)(value)

    for path in ("/users/4/files/a.txt", "/users/4/docs/1", "/teams/3/x", "/teams/secret", "/"):
        expected = {r for r in scan(snapshot, "p") if match(path, r.values[1])}
        assert set(view.rules_matching("keyMatch2", 1, path, match)) == expected


def test_a_row_shown_then_removed_is_not_found() -> None:
    """Ids kept for rows shown lately never outlive the rows (added ones included)."""
    snapshot = Snapshot.of(1, initial_rows(), MODEL)
    extra = Rule.of("p", "team1", "/shown", "GET", "allow")
    snapshot = snapshot.with_changes(2, [extra], [])
    view = views.view(snapshot)
    view.base.remember([extra, snapshot.rules[0]])
    assert view.find(extra.id) == extra
    after = snapshot.with_changes(3, [], [extra, snapshot.rules[0]])
    assert views.view(after).find(extra.id) is None
    assert views.view(after).find(snapshot.rules[0].id) is None


def test_a_hint_finds_the_row_among_its_subjects_rows() -> None:
    snapshot = Snapshot.of(1, initial_rows(), MODEL)
    view = views.view(snapshot)
    rule = Rule.of("p", "user7@example.com", "/users/7/files/:name", "GET", "allow")
    link = Rule.of("g", "user7@example.com", "team2")
    assert view.find(rule.id, "user7@example.com") == rule
    assert view.find(link.id, "user7@example.com") == link
    assert view.base._ids is None  # found without indexing every row
    other = Rule.of("p", "user9@example.com", "/users/9/docs/0", "GET|POST", "allow")
    assert view.find(other.id, "user8@example.com") == other  # a wrong hint: the index
    assert view.base._ids is not None
