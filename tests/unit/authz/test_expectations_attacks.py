"""Attacks on the policy-test gate: writes that could commit past a stored promise,
stored tests the gate could stop reading, spellings, and the what-if diff checked
against deciding every subject and target by brute force.

A test here that fails shows a hole (its docstring says which); one that passes guards
a hole that was tried and found closed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from authz import expectations as tests
from authz import whatif
from authz.engine import STAGE_FROM
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.errors import EngineUnavailable
from authz.errors import RuleError
from authz.expectations import Expectation
from authz.expectations import ExpectationsBroken
from authz.expectations import expectation
from authz.model import PolicyModel
from authz.rules import Rule
from authz.rules import is_role
from authz.rules import is_user
from authz.snapshot import Snapshot
from authz.store import PolicyStore
from tests.unit.authz.conftest import DbState

NO_ADMIN_FOR_VISITORS = expectation("anonymous", "GET", "/admin/", "deny", "the editor is private")
OPEN_ADMIN = Rule.of("p", "anonymous", "/admin/*", "GET", "allow")


def store_tests(engine: PolicyEngine, *items: Expectation) -> None:
    engine.change_expectations(items, actor="owner", source="cli", action="test.add")


def filler(count: int = STAGE_FROM) -> list[Rule]:
    """Rows enough to make a change large (staged), none of them touching /admin/."""
    return [Rule.of("p", f"team{i}", f"/t/{i}", "GET", "allow") for i in range(count)]


def change_log_count(store: PolicyStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM policy_change")).scalar_one())


# -- 1. bypass: a staged write rebased on a write in between --------------------------------


def test_a_staged_write_rebased_on_a_write_in_between_is_judged_as_committed(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    write_in_between: Callable[[Callable[[], None]], None],
) -> None:
    """Was a hole (high): each write alone keeps the promise; the two together break it.

    A large change puts visitors in a new role ``auditors`` (harmless: the role may do
    nothing); meanwhile another instance lets ``auditors`` open the editor (harmless:
    nobody is in it). The staged write rebases on the write in between, but
    ``_commit_staged`` judges the policy tests on the snapshot it planned (without the
    write in between), so the committed policy lets visitors open the editor.
    """
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    grant = Rule.of("p", "auditors", "/admin/*", "GET", "allow")
    write_in_between(lambda: other_engine.apply(Change.adding(grant), actor="bob", source="web"))
    join = Rule.of("g", "anonymous", "auditors")
    try:
        engine.apply(Change.adding(*filler(), join), actor="ops", source="cli")
    except ExpectationsBroken:
        pass  # the fix: refused, as a write of both changes at once would be
    engine.refresh()
    assert not engine.decide("anonymous", "/admin/", "GET").allowed
    assert tests.failures(engine.snapshot, engine.expectations()) == []


def test_a_staged_removal_rebased_on_a_removal_in_between_keeps_an_allow_promise(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    write_in_between: Callable[[Callable[[], None]], None],
) -> None:
    """Was a hole (high), the same gap the other way: two rows allow admins the editor; a small
    write removes one, a staged write removes the other. Each alone keeps "admin may GET
    /admin/"; together they take the editor from every admin."""
    extra = Rule.of("p", "admin", "/admin/", "GET", "allow")
    engine.apply(Change.adding(extra), actor="ops", source="cli")
    keep = expectation("admin", "GET", "/admin/", "allow")
    store_tests(engine, keep)
    other_engine.refresh()
    wide = Rule.of("p", "admin", "/admin/*", ".*", "allow")
    write_in_between(lambda: other_engine.apply(Change.removing(extra), actor="bob", source="web"))
    try:
        engine.apply(Change(add=tuple(filler()), remove=(wide,)), actor="ops", source="cli")
    except ExpectationsBroken:
        pass
    engine.refresh()
    assert engine.decide("admin", "/admin/", "GET").allowed
    assert tests.failures(engine.snapshot, engine.expectations()) == []


def test_a_test_stored_while_a_large_change_is_staged_gates_it(
    engine: PolicyEngine,
    other_engine: PolicyEngine,
    write_in_between: Callable[[Callable[[], None]], None],
    db_state: Callable[[], DbState],
) -> None:
    """Held: the staged write reads the tests under the lock, so a promise stored by
    another instance after the rows were planned still refuses the change."""
    write_in_between(lambda: store_tests(other_engine, NO_ADMIN_FOR_VISITORS))
    before = db_state()
    with pytest.raises(ExpectationsBroken):
        engine.apply(Change.adding(*filler(), OPEN_ADMIN), actor="ops", source="cli")
    after = db_state()
    assert (after.revision, after.rules) == (before.revision, before.rules)
    assert after.audit_count == before.audit_count + 1  # the test's own entry, nothing more


# -- 1. bypass: a write that brings back a refused policy ---------------------------------


def refuse_stored_policy(engine: PolicyEngine, store: PolicyStore) -> Rule:
    """Store by hand a row that makes the stored policy refused (as a bad hand edit or a
    replaced model would), and load it; return the bad row."""
    bad = Rule.of("p", "anonymous", "/x", "GET", "Deny")  # a deny that no longer reads
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) "
                "VALUES ('p', 'anonymous', '/x', 'GET', 'Deny')"
            )
        )
    engine.load()
    assert engine.refused is not None
    return bad


def test_the_write_that_fixes_a_refused_policy_is_still_gated(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """Was a hole: while the stored policy is refused no test "passed before", so the write
    that removed the bad row could also open the editor to visitors, unrefused. A policy
    that cannot decide now breaks no promise by the change, but the change is judged."""
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    bad = refuse_stored_policy(engine, store)
    with pytest.raises(ExpectationsBroken, match="anonymous may not GET /admin/"):
        engine.apply(Change(add=(OPEN_ADMIN,), remove=(bad,)), actor="ops", source="cli")
    assert engine.refused is not None  # nothing written: still refused, still deciding nothing


def test_a_refused_policy_fixed_without_breaking_anything_is_written(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """Held: the plain fix (remove the bad row) goes through; the policy decides again."""
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    bad = refuse_stored_policy(engine, store)
    engine.apply(Change.removing(bad), actor="ops", source="cli")
    assert engine.refused is None
    assert tests.failures(engine.snapshot, engine.expectations()) == []


# -- 3. fail closed: stored tests that do not read, a missing table, a failing read ------------


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE policy_expectation SET outcome = 'DENY'",
        "UPDATE policy_expectation SET path = '//admin/'",
        "UPDATE policy_expectation SET subject = 'Anonymous'",
        "UPDATE policy_expectation SET method = 'get'",
    ],
)
def test_a_write_is_not_let_past_a_stored_test_edited_into_nonsense(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable[[], DbState], edit: str
) -> None:
    """Was a hole (medium): a stored test that no longer reads is logged and left out, so the
    write it was stored to stop commits. Skipping a promise can only allow a write:
    fail closed would be to refuse policy writes until the row is fixed or removed."""
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    with store.engine.begin() as conn:
        conn.execute(sa.text(edit))
    before = db_state()
    with pytest.raises((ExpectationsBroken, EngineUnavailable, RuleError)):
        engine.apply(Change.adding(OPEN_ADMIN), actor="ops", source="web")
    assert db_state() == before


def test_a_missing_table_refuses_every_write(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable[[], DbState]
) -> None:
    """Held: a database at migration 0008 (no policy_expectation table) refuses writes
    with EngineUnavailable (503), small and staged alike; decisions still work."""
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE policy_expectation"))
    before = db_state()
    with pytest.raises(EngineUnavailable):
        engine.apply(Change.adding(OPEN_ADMIN), actor="ops", source="web")
    with pytest.raises(EngineUnavailable):
        engine.apply(Change.adding(*filler(), OPEN_ADMIN), actor="ops", source="cli")
    with pytest.raises(EngineUnavailable):
        engine.what_if(Change.adding(OPEN_ADMIN))
    with pytest.raises(EngineUnavailable):
        store_tests(engine, NO_ADMIN_FOR_VISITORS)
    assert db_state() == before
    assert change_log_count(store) == 1
    assert not engine.decide("anonymous", "/admin/", "GET").allowed


def test_a_database_error_while_reading_tests_refuses_the_write(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable[[], DbState]
) -> None:
    """Held: the read of the tests fails inside the write's transaction (a view whose
    rows raise when read): the write is refused with EngineUnavailable, nothing written."""
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE policy_expectation RENAME TO kept"))
        conn.execute(
            sa.text(
                "CREATE VIEW policy_expectation AS SELECT id, json(subject) AS subject, method, "
                "path, outcome, note FROM kept"
            )
        )
    before = db_state()
    for change in (Change.adding(OPEN_ADMIN), Change.adding(*filler(), OPEN_ADMIN)):
        with pytest.raises(EngineUnavailable):
            engine.apply(change, actor="ops", source="cli")
    assert db_state() == before
    assert not engine.decide("anonymous", "/admin/", "GET").allowed


# -- 2. spelling -----------------------------------------------------------------------------


def test_a_path_with_surrounding_spaces_is_refused() -> None:
    """Was a hole: a stored test for ``/admin/ `` (a real request: ``/admin/%20``) exported
    as a CSV line that read back as ``/admin/``, another request. Paths, like subjects,
    have one spelling: surrounding spaces are refused."""
    with pytest.raises(RuleError) as caught:
        expectation("anonymous", "GET", "/admin/ ", "deny")
    assert caught.value.field == "path"


def test_a_percent_escape_in_a_tested_path_is_refused() -> None:
    """Was a hole (low): the middleware decides the decoded path, so ``/files/%61dmin`` in a test
    names the request sent as ``/files/%2561dmin``, not the one a reader of the test (or
    a browser sent to ``/files/%61dmin``) has in mind: with ``p, anonymous, /files/a*``
    the test "anonymous may not GET /files/%61dmin" passes while ``GET /files/%61dmin``
    is allowed. Fix: ``expectation()`` refuses ``%`` in a path (tests are written
    decoded; a path that really holds ``%`` is rare enough to ask for a note)."""
    with pytest.raises(RuleError) as caught:
        expectation("anonymous", "GET", "/files/%61dmin", "deny")
    assert caught.value.field == "path"


@pytest.mark.parametrize(
    "values",
    [
        ("anonymous", "HEAD", "/admin/", "deny"),
        ("anonymous", "get", "/admin/", "deny"),
        ("ANONYMOUS", "GET", "/admin/", "deny"),
        ("Alice@example.com", "GET", "/admin/", "deny"),
        ("token:CI", "GET", "/admin/", "deny"),
        ("anonymous", "GET", "/admin/\u0000", "deny"),
        ("anonymous", "GET", "/admin/\x7f", "deny"),
        ("anonymous", "GET", "/admin/\ud800", "deny"),
        ("anonymous", "GET", "/admin/./", "deny"),
        ("anonymous", "GET", "/admin//", "deny"),
        ("anonymous", "GET", "/admin\\", "deny"),
        ("anonymous", "GET", "/" + "a" * 255, "deny"),
        ("anonymous", "G" * 33, "/admin/", "deny"),
        ("anonymous", "GET", "/admin/", "deny", "x" * 501),
        ("anonymous", "GET", "/admin/", "deny", "a\u0085b\x1b"),
    ],
)
def test_a_request_the_middleware_would_decide_otherwise_is_not_stored(
    values: tuple[str, ...],
) -> None:
    """Held: spellings the middleware folds (HEAD, case) or refuses (control characters,
    dot segments, surrogates, over-long values) are refused by field, never folded."""
    with pytest.raises(RuleError):
        expectation(*values)


def test_a_tried_request_is_judged_as_the_engine_decides_it(
    engine: PolicyEngine,
) -> None:
    """Held: the request a test names is decided exactly as the middleware decides the
    same canonical request (same snapshot function, same values)."""
    for path in ("/admin/", "/admin", "/admin/x", "/Admin/", "/admin/\u00e9", "/a b"):
        item = expectation("anonymous", "GET", path, "deny")
        assert tests.judge(engine.snapshot, item).decision == engine.decide(
            "anonymous", path, "GET"
        )


# -- 5. what-if against brute force ------------------------------------------------------------

_ROLES = ("anonymous", "user", "admin", "ops", "audit")
_USERS = ("a@x.io", "b@x.io", "c@x.io")
_PATHS = ("/", "/admin/*", "/admin/", "/r/:id", "/r/7", "/pub/*", "/login")
_METHODS = ("GET", "POST", "GET|POST", ".*", "DELETE")


def _random_rule(rnd: random.Random) -> Rule:
    kind = rnd.random()
    if kind < 0.3:
        member = rnd.choice(_USERS + _ROLES)
        role = rnd.choice(_ROLES)
        return Rule.of("g", member, role)
    subject = rnd.choice(_ROLES + _USERS[:1])
    effect = "deny" if rnd.random() < 0.2 else "allow"
    return Rule.of("p", subject, rnd.choice(_PATHS), rnd.choice(_METHODS), effect)


def _acyclic(model: PolicyModel, rules: list[Rule]) -> list[Rule]:
    kept: list[Rule] = []
    for rule in rules:
        candidate = Snapshot.of(0, kept, model)
        if rule.ptype == "g" and (
            rule.values[0] == rule.values[1]
            or candidate.inheritance_path(rule.values[1], rule.values[0]) is not None
        ):
            continue
        kept.append(rule)
    return list(dict.fromkeys(kept))


def _brute(before: Snapshot, after: Snapshot, targets: list[whatif.Target]) -> set[tuple]:
    """Every (subject, gained, method, label) that flips, deciding every role and user."""
    subjects = sorted({*before.roles, *after.roles, *_ROLES, *_USERS})
    found: set[tuple] = set()
    for target in targets:
        for method in target.methods:
            for subject in subjects:
                gain = whatif._flipped(before, after, subject, target.path, method)
                if gain is not None:
                    found.add((subject, gain, method, target.label))
    return found


def _seeds() -> Iterator[int]:
    yield from range(300)


@pytest.mark.parametrize("seed", list(_seeds()))
def test_what_if_lists_every_flip_brute_force_finds(model: PolicyModel, seed: int) -> None:
    """Held where it passes: on a random small policy and a random change, every role that
    gains or loses a target is listed, and every user too unless a role of theirs has the
    same line (roles the change does not touch are checked to really not flip)."""
    rnd = random.Random(seed)
    rows = _acyclic(model, [_random_rule(rnd) for _ in range(rnd.randint(3, 14))])
    before = Snapshot.of(1, rows, model)
    added = tuple(
        r
        for r in _acyclic(model, [*rows, *(_random_rule(rnd) for _ in range(rnd.randint(0, 3)))])
        if r not in before.ruleset
    )
    removed = tuple(r for r in rows if rnd.random() < 0.2)
    after = before.with_changes(2, added, removed)
    if set(added) & set(removed):
        return
    diff = whatif.compare(before, after, added=added, removed=removed)
    targets = whatif._patterns(before, after, added, removed, [])
    expected = _brute(before, after, targets)
    listed = {(a.subject, a.gained, a.method, a.label) for a in diff.lines}
    assert diff.more == 0 and not diff.limits
    missing = []
    for subject, gain, method, label in sorted(expected):
        if (subject, gain, method, label) in listed:
            continue
        if is_user(subject):
            held = (after if gain else before).roles_for(subject)
            if any((role, gain, method, label) in listed for role in held):
                continue
        missing.append((subject, gain, method, label))
    assert missing == [], f"seed {seed}: rows {rows}, +{added} -{removed}"
    wrong = listed - expected
    assert wrong == set()
    for subject, *_rest in listed:
        assert is_role(subject) or is_user(subject)


def test_what_if_compares_a_route_on_the_methods_it_serves(model: PolicyModel) -> None:
    """Was a hole (low): a route and a policy pattern of the same label are merged, and the
    pattern's methods win: ``/r/<int:id>`` serving DELETE, with ``p, user, /r/:id, GET``
    in the policy, is compared on GET only, so "+ a@x.io may now DELETE /r/:id" (given by
    ``/r/*``) is missing under the route's own label. Fix (authz/whatif.py, compare):
    merge the methods of targets that share a label instead of keeping the last."""
    rows = [
        Rule.of("p", "user", "/r/:id", "GET", "allow"),
        Rule.of("p", "ops", "/r/*", "DELETE", "allow"),
        Rule.of("g", "a@x.io", "user"),
    ]
    before = Snapshot.of(1, rows, model)
    join = Rule.of("g", "a@x.io", "ops")
    after = before.with_changes(2, [join], [])
    route = whatif.route_target("/r/<int:id>", ["GET", "HEAD", "DELETE"])
    assert route is not None
    diff = whatif.compare(before, after, added=(join,), removed=(), routes=[route])
    assert "+ a@x.io may now DELETE /r/:id" in [str(line) for line in diff.lines]


def test_what_if_says_when_a_pattern_could_not_be_compared(tmp_path: Path) -> None:
    """Was a hole (low): a pattern with no sample path (a regular expression under a regexMatch
    model, ``*`` under keyMatch2) is left out of the comparison without a word in
    ``limits``: the diff reads "no route or policy path changes" for a change that
    opens every path. Fix (authz/whatif.py, _patterns): add a limit naming how many
    patterns could not be sampled."""
    conf = tmp_path / "regex.conf"
    conf.write_text(
        "[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act\n"
        "[role_definition]\ng = _, _\n[policy_effect]\ne = some(where (p.eft == allow))\n"
        "[matchers]\nm = g(r.sub, p.sub) && regexMatch(r.obj, p.obj) && r.act == p.act\n"
    )
    model = PolicyModel.from_file(conf)
    before = Snapshot.of(1, [Rule.of("p", "user", "^/home$", "GET")], model)
    opened = Rule.of("p", "anonymous", "^/.*$", "GET")
    after = before.with_changes(2, [opened], [])
    assert after.decide("anonymous", "/admin/", "GET").allowed
    diff = whatif.compare(before, after, added=(opened,), removed=())
    assert diff.lines or diff.limits


# -- 4. cost: bounded, not timed ---------------------------------------------------------------


def test_what_if_on_a_role_with_many_members_stays_within_its_limits(
    model: PolicyModel, default_rules: tuple[Rule, ...]
) -> None:
    """Held: a change to a role with 20,000 members compares at most MAX_USERS users and
    says so; the role's own line speaks for the rest."""
    members = [Rule.of("g", f"u{i}@x.io", "user") for i in range(20_000)]
    before = Snapshot.of(1, [*default_rules, *members], model)
    opened = Rule.of("p", "user", "/admin/*", "GET", "allow")
    after = before.with_changes(2, [opened], [])
    diff = whatif.compare(before, after, added=(opened,), removed=())
    assert diff.compared["users"] <= whatif.MAX_USERS
    assert any("active users" in limit for limit in diff.limits)
    assert "+ user may now GET /admin/*" in [str(line) for line in diff.lines]
    assert len(diff.lines) <= whatif.MAX_LINES


# -- 6. audit ----------------------------------------------------------------------------------


def test_a_forced_staged_write_names_what_it_forced_past(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    """Held: a large forced write's audit entry is marked forced and names the test."""
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    engine.apply(Change.adding(*filler(), OPEN_ADMIN), actor="ops", source="cli", force=True)
    entry = store.audit_entries(limit=1)[0]
    assert entry.forced and entry.revision == engine.revision
    assert "forced past 1 policy test(s): anonymous may not GET /admin/" in entry.detail


def test_a_refused_staged_write_leaves_no_trace(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable[[], DbState]
) -> None:
    """Held: no revision, no audit entry, no change-log entry, no staged row left."""
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    before, logged = db_state(), change_log_count(store)
    with pytest.raises(ExpectationsBroken):
        engine.apply(Change.adding(*filler(), OPEN_ADMIN), actor="ops", source="cli")
    assert db_state() == before
    assert change_log_count(store) == logged
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM casbin_rule")).scalar_one() == len(
            before.rules
        )
