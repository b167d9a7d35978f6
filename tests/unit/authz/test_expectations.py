"""Policy tests as data: checking, running, files, and the engine's gate on every write."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from authz import expectations as tests
from authz.engine import STAGE_FROM
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.errors import PolicyFileError
from authz.errors import RuleError
from authz.expectations import Expectation
from authz.expectations import ExpectationsBroken
from authz.expectations import expectation
from authz.model import PolicyModel
from authz.rules import Rule
from authz.snapshot import Snapshot
from authz.store import PolicyStore
from tests.unit.authz.conftest import REPO
from tests.unit.authz.conftest import DbState

SHIPPED = REPO / "policies" / "default-tests.csv"
NO_ADMIN_FOR_VISITORS = expectation("anonymous", "GET", "/admin/", "deny", "the editor is private")
USERS_SEE_HOME = expectation("user", "GET", "/", "allow")
OPEN_ADMIN = Rule.of("p", "anonymous", "/admin/*", "GET", "allow")


@pytest.fixture
def snapshot(model: PolicyModel, default_rules: tuple[Rule, ...]) -> Snapshot:
    return Snapshot.of(1, default_rules, model)


def store_tests(engine: PolicyEngine, *items: Expectation) -> None:
    engine.change_expectations(items, actor="owner", source="cli", action="test.add")


def audit_actions(store: PolicyStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT action FROM audit_log ORDER BY id")).scalars())


# -- one expectation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field"),
    [
        (("Alice@Example.com", "GET", "/", "allow"), "subject"),
        ((" user", "GET", "/", "allow"), "subject"),
        (("no such thing!", "GET", "/", "allow"), "subject"),
        (("", "GET", "/", "allow"), "subject"),
        (("user", "get", "/", "allow"), "method"),
        (("user", "HEAD", "/", "allow"), "method"),
        (("user", "G ET", "/", "allow"), "method"),
        (("user", "GET", "//admin/", "deny"), "path"),
        (("user", "GET", "/a/../admin/", "deny"), "path"),
        (("user", "GET", "admin", "deny"), "path"),
        (("user", "GET", "/a\x00", "deny"), "path"),
        (("user", "GET", "/" + "a" * 300, "deny"), "path"),
        (("user", "GET", "/", "Allow"), "outcome"),
        (("user", "GET", "/", "maybe"), "outcome"),
        (("user", "GET", "/", "allow", "two\nlines"), "note"),
    ],
)
def test_an_expectation_in_another_spelling_is_refused_by_field(
    values: tuple[str, ...], field: str
) -> None:
    """What is promised is exactly what is decided: no folding, no second spelling."""
    with pytest.raises(RuleError) as caught:
        expectation(*values)
    assert caught.value.field == field


def test_every_kind_of_subject_is_accepted() -> None:
    for subject in ("anonymous", "user", "alice@example.com", "token:ci"):
        assert expectation(subject, "POST", "/reports/7", "deny").subject == subject


def test_the_id_names_the_request_not_the_outcome() -> None:
    allow = expectation("user", "GET", "/", "allow")
    deny = expectation("user", "GET", "/", "deny", "changed our mind")
    assert allow.id == deny.id
    assert allow.id != expectation("user", "POST", "/", "allow").id


def test_a_result_names_the_deciding_rule(snapshot: Snapshot) -> None:
    passed = tests.judge(snapshot, USERS_SEE_HOME)
    assert passed.passed and passed.rule == Rule.of("p", "user", "/", "GET", "allow")
    opened = snapshot.with_changes(2, [OPEN_ADMIN], [])
    failed = tests.judge(opened, NO_ADMIN_FOR_VISITORS)
    assert not failed.passed
    assert failed.rule == OPEN_ADMIN
    assert "allowed by rule [p, anonymous, /admin/*, GET, allow]" in str(failed)
    assert str(failed).startswith("FAIL: anonymous may not GET /admin/ (the editor is private)")


def test_a_refused_policy_keeps_no_promise(model: PolicyModel) -> None:
    rows = [
        Rule.of("p", "user", "/x", "GET", "allow"),
        Rule.of("p", "anonymous", "/x", "GET", "Deny"),
    ]
    refused = Snapshot.stored(3, rows, [1, 2], model)
    assert refused.refused is not None
    result = tests.judge(refused, expectation("anonymous", "GET", "/x", "deny"))
    assert not result.passed and result.decision is None
    assert "not decided" in result.why()


def test_broken_lists_only_what_passed_before(snapshot: Snapshot) -> None:
    """A promise already failing does not hold up an unrelated change."""
    already = expectation("user", "GET", "/nowhere", "allow")
    opened = snapshot.with_changes(2, [OPEN_ADMIN], [])
    found = tests.broken(snapshot, opened, [already, NO_ADMIN_FOR_VISITORS, USERS_SEE_HOME])
    assert [r.expectation for r in found] == [NO_ADMIN_FOR_VISITORS]


def test_the_shipped_tests_pass_on_the_shipped_policy(snapshot: Snapshot) -> None:
    shipped = tests.read_file(SHIPPED)
    assert len(shipped.expectations) >= 3
    failing = tests.failures(snapshot, shipped.expectations)
    assert not failing, [str(r) for r in failing]
    requests = {str(e) for e in shipped.expectations}
    assert {"anonymous may not GET /admin/", "user may GET /", "admin may GET /admin/"} <= requests


# -- files ----------------------------------------------------------------------------------


def test_a_file_round_trips_through_export() -> None:
    items = [
        NO_ADMIN_FOR_VISITORS,
        expectation("alice@example.com", "POST", "/reports/7", "allow", 'a note, with "quotes"'),
        USERS_SEE_HOME,
    ]
    parsed = tests.parse(tests.export(items))
    assert list(parsed.expectations) == items


def test_every_bad_line_is_named_and_nothing_is_kept() -> None:
    text = (
        "# comment\n"
        "anonymous, GET, /admin/, deny\n"
        "user, GET, /, perhaps\n"
        "user, GET\n"
        "anonymous, GET, /admin/, allow\n"
        'user, GET, /x, allow, "unterminated\n'
    )
    with pytest.raises(PolicyFileError) as caught:
        tests.parse(text, path="t.csv")
    lines = [e.line for e in caught.value.errors]
    assert lines == [3, 4, 5, 6]
    assert "already expected on line 2" in str(caught.value)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"anonymous, GET, /\xff, deny\n")
    with pytest.raises(PolicyFileError, match="not UTF-8"):
        tests.read_file(path)


# -- the engine's gate ----------------------------------------------------------------------


def test_a_change_that_breaks_a_test_is_refused_and_writes_nothing(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable[[], DbState]
) -> None:
    store_tests(engine, NO_ADMIN_FOR_VISITORS, USERS_SEE_HOME)
    before = db_state()
    with pytest.raises(ExpectationsBroken) as caught:
        engine.apply(Change.adding(OPEN_ADMIN), actor="mallory", source="web")
    assert [r.expectation for r in caught.value.results] == [NO_ADMIN_FOR_VISITORS]
    assert caught.value.results[0].rule == OPEN_ADMIN
    assert "anonymous may not GET /admin/" in str(caught.value)
    assert db_state() == before
    assert not engine.decide("anonymous", "/admin/", "GET").allowed
    # Removing the rule a promise rests on is refused too.
    with pytest.raises(ExpectationsBroken, match="user may GET /"):
        engine.apply(
            Change.removing(Rule.of("p", "user", "/", "GET", "allow")), actor="m", source="api"
        )
    assert db_state() == before


def test_a_forced_change_is_written_and_its_audit_entry_names_the_tests(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    engine.apply(Change.adding(OPEN_ADMIN), actor="ops", source="cli", force=True)
    assert engine.decide("anonymous", "/admin/", "GET").allowed
    entry = store.audit_entries(limit=1)[0]
    assert entry.forced
    assert "forced past 1 policy test(s): anonymous may not GET /admin/" in entry.detail
    # The broken promise no longer holds up other changes (it failed before them).
    engine.apply(Change.adding(Rule.of("p", "user", "/x", "GET", "allow")), actor="a", source="web")


def test_a_change_that_keeps_every_test_is_written(engine: PolicyEngine) -> None:
    store_tests(engine, NO_ADMIN_FOR_VISITORS, USERS_SEE_HOME)
    engine.apply(
        Change.adding(Rule.of("p", "user", "/reports/:id", "POST", "allow")),
        actor="a",
        source="web",
    )
    assert engine.decide("user", "/reports/7", "POST").allowed


def test_a_role_link_is_gated(engine: PolicyEngine, db_state: Callable[[], DbState]) -> None:
    store_tests(engine, expectation("alice@example.com", "DELETE", "/admin/rules/1", "deny"))
    before = db_state()
    with pytest.raises(ExpectationsBroken, match="alice@example.com may not DELETE"):
        engine.apply(
            Change.adding(Rule.of("g", "alice@example.com", "admin")), actor="a", source="web"
        )
    assert db_state() == before


def test_a_large_staged_change_is_gated(
    engine: PolicyEngine, db_state: Callable[[], DbState]
) -> None:
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    rows = [Rule.of("p", f"team{i}", f"/t/{i}", "GET", "allow") for i in range(STAGE_FROM)]
    before = db_state()
    with pytest.raises(ExpectationsBroken):
        engine.apply(Change.adding(*rows, OPEN_ADMIN), actor="ops", source="cli")
    assert db_state() == before
    engine.apply(Change.adding(*rows, OPEN_ADMIN), actor="ops", source="cli", force=True)
    assert engine.decide("anonymous", "/admin/", "GET").allowed


def test_a_preview_refuses_as_the_write_would_and_what_if_tells_why(
    engine: PolicyEngine, db_state: Callable[[], DbState]
) -> None:
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    before = db_state()
    with pytest.raises(ExpectationsBroken):
        engine.preview(Change.adding(OPEN_ADMIN))
    planned = engine.what_if(Change.adding(OPEN_ADMIN))
    assert isinstance(planned.refused, ExpectationsBroken)
    assert planned.after.decide("anonymous", "/admin/", "GET").allowed
    assert planned.expectations == [NO_ADMIN_FOR_VISITORS]
    assert db_state() == before


def test_another_instance_gates_on_tests_stored_by_the_first(
    engine: PolicyEngine, other_engine: PolicyEngine
) -> None:
    """Tests are read inside each write's transaction: nothing to propagate."""
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    with pytest.raises(ExpectationsBroken):
        other_engine.apply(Change.adding(OPEN_ADMIN), actor="a", source="web")


# -- storing tests --------------------------------------------------------------------------


def test_a_test_the_policy_does_not_keep_is_refused_unless_forced(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    wrong = expectation("anonymous", "GET", "/login", "deny")
    with pytest.raises(ExpectationsBroken) as caught:
        store_tests(engine, wrong)
    assert caught.value.adding and caught.value.results[0].rule is not None
    assert engine.expectations() == []
    engine.change_expectations([wrong], actor="ops", source="cli", action="test.add", force=True)
    assert engine.expectations() == [wrong]
    entry = store.audit_entries(limit=1)[0]
    assert entry.forced and entry.action == "test.add"
    assert entry.added == (wrong.as_rule(),)


def test_storing_is_audited_idempotent_and_replaces_by_request(
    engine: PolicyEngine, store: PolicyStore
) -> None:
    store_tests(engine, USERS_SEE_HOME)
    count = len(audit_actions(store))
    store_tests(engine, USERS_SEE_HOME)  # as stored: nothing written
    assert len(audit_actions(store)) == count
    noted = USERS_SEE_HOME._replace(note="the home page")
    added, removed = engine.change_expectations([noted], actor="o", source="cli", action="test.add")
    assert added == (noted,) and removed == (USERS_SEE_HOME,)
    assert engine.expectations() == [noted]
    _, removed = engine.change_expectations(
        remove=[USERS_SEE_HOME], actor="o", source="cli", action="test.remove"
    )
    assert removed == (noted,) and engine.expectations() == []
    assert audit_actions(store)[-3:] == ["test.add", "test.add", "test.remove"]


def test_replace_all_removes_what_the_file_does_not_hold(engine: PolicyEngine) -> None:
    store_tests(engine, USERS_SEE_HOME, NO_ADMIN_FOR_VISITORS)
    admin = expectation("admin", "GET", "/admin/", "allow")
    added, removed = engine.change_expectations(
        [admin, USERS_SEE_HOME], actor="o", source="cli", action="tests.load", replace_all=True
    )
    assert added == (admin,) and removed == (NO_ADMIN_FOR_VISITORS,)
    assert set(engine.expectations()) == {admin, USERS_SEE_HOME}


def test_a_stored_test_edited_into_nonsense_refuses_writes_until_removed(
    engine: PolicyEngine, store: PolicyStore, db_state: Callable[[], DbState]
) -> None:
    """It cannot be judged, and skipping it would let through what it was there to stop."""
    store_tests(engine, NO_ADMIN_FOR_VISITORS)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE policy_expectation SET path = '//admin/'"))
    assert engine.expectations() == []
    (bad,) = engine.bad_expectations()
    assert bad.expectation.path == "//admin/" and "does not read" in (bad.error or "")
    before = db_state()
    harmless = Change.adding(Rule.of("p", "user", "/x", "GET", "allow"))
    with pytest.raises(ExpectationsBroken, match="do not read") as caught:
        engine.apply(harmless, actor="a", source="web")
    assert caught.value.unreadable and db_state() == before
    # Removed by the request it names (as stored), then writes go through again.
    engine.change_expectations(remove=[bad.expectation], actor="o", source="cli", action="t")
    assert engine.bad_expectations() == []
    engine.apply(harmless, actor="a", source="web")
    # A forced write goes past it, and says so.
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO policy_expectation (subject, method, path, outcome, note) "
                "VALUES ('user', 'get', '/', 'allow', '')"
            )
        )
    engine.apply(Change.removing(*harmless.add), actor="ops", source="cli", force=True)
    assert "forced past 1 policy test(s): user may get /" in store.audit_entries(limit=1)[0].detail


def test_a_test_and_a_write_racing_never_leave_a_broken_promise(
    engine: PolicyEngine, other_engine: PolicyEngine
) -> None:
    """Storing a test takes the policy write lock: a write judged against the tests before
    it either commits first (then the test is refused) or is refused itself."""
    errors: list[Exception] = []

    def write() -> None:
        try:
            other_engine.apply(Change.adding(OPEN_ADMIN), actor="a", source="web")
        except ExpectationsBroken as e:
            errors.append(e)

    def promise() -> None:
        try:
            store_tests(engine, NO_ADMIN_FOR_VISITORS)
        except ExpectationsBroken as e:
            errors.append(e)

    threads = [threading.Thread(target=write), threading.Thread(target=promise)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.refresh()
    assert len(errors) == 1
    kept = tests.failures(engine.snapshot, engine.expectations())
    assert kept == []
